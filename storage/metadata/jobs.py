"""Jobs: the `jobs` table.

A job is one pipeline's share of a wave (the global id it shares with the
commit that started it).  It is claimed by compare-and-swap on its owner and
kept by a heartbeat, so two runners never hold one job.
"""

from __future__ import annotations

from .db import Tx  # noqa: F401
