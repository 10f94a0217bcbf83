"""dpl engine: repos, commits, files, pipelines, jobs, provenance.

This is the Python API; the CLI is a thin skin over it::

    from . import Store
    store = Store.open()          # the store found from the current directory
    store.create_repo("images")
"""

from .store import Store, find_store, init_store

__all__ = ["Store", "find_store", "init_store"]
