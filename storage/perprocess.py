"""One object per key in a process, forgotten by a forked child.

A writer's turn (storage/turns.py) and a branch's landing queue
(engine/landqueue.py) must each be one object per lock file or directory in
a process, shared by its threads.  A forked child holds none of its
parent's locks and runs none of its threads, so it starts with none of
these objects; `on_fork` lets an owner release what a child's copy still
holds (the turns close their copies of the lock files' descriptors).
"""

from __future__ import annotations

import os
import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class PerProcess(Generic[T]):
    def __init__(self, make: Callable[[str], T], on_fork: Callable[[T], None] | None = None):
        self._make, self._on_fork = make, on_fork
        self._items: dict[str, T] = {}
        self._guard = threading.Lock()
        os.register_at_fork(after_in_child=self._forget)

    def get(self, key: str) -> T:
        """The object for `key`, made at its first use in this process."""
        with self._guard:
            found = self._items.get(key)
            if found is None:
                found = self._items[key] = self._make(key)
            return found

    def _forget(self) -> None:
        if self._on_fork is not None:
            for item in self._items.values():
                self._on_fork(item)
        self._items = {}
        self._guard = threading.Lock()  # a parent's thread may have held it at the fork
