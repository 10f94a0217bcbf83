"""The metadata layer: repos, branches, commits, pipelines, jobs, datums,
lineage and secrets, in SQLite (embedded) or PostgreSQL (shared).

`db` holds the backend interface; one module per table group holds that
group's typed rows and the only SQL in dpl.
"""

from .db import Database, Row, Tx, is_url, open_database

__all__ = ["Database", "Row", "Tx", "is_url", "open_database"]
