"""A fixed set of daemon worker threads, for remote stores and the read cache.

Not `ThreadPoolExecutor`: its threads are joined at interpreter exit, so a
command failing with uploads still queued would sit through their retries
before exiting.  Unsynced uploads and unread prefetches are worthless (no
commit refers to them), so daemon threads that die with the process are
right here.
"""

from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import Future
from typing import Callable


class DaemonPool:
    def __init__(self, size: int, name: str):
        self._size = size
        self._name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def submit(self, fn: Callable, *args) -> Future:
        if self._pid != os.getpid():  # a forked child inherits the list, not the threads
            self.__init__(self._size, self._name)
        future: Future = Future()
        self._queue.put((future, fn, args))
        if len(self._threads) < self._size:
            with self._lock:
                if len(self._threads) < self._size:
                    t = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
                    t.start()
                    self._threads.append(t)
        return future

    def _work(self) -> None:
        while True:
            future, fn, args = self._queue.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as e:  # handed to whoever waits on the future
                future.set_exception(e)
