"""Curate (sidebar stage): file formats (formats), imports (importing), duplicate detection (dedup), editing
and review of examples (curation), frozen versions and exports (datasets), and the demo project (demo)."""
