"""Background jobs: processes whose truth lives in the database (queue), what a job process calls (worker)
and the run folder's layout (rundir). Knows nothing of training or generation: the stages hand it a module
to run, the role a user needs to control the job, and how many device slots it takes."""
