"""dpl engine: repos, commits, files, pipelines, jobs, provenance. This is the Python API."""
