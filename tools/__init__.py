"""Offline tools of the repository, outside the installed packages (pyproject installs core, storage and ui only):
demogen writes the demo data file that core/curate/data ships."""
