"""The data benchmarks run on, generated once and kept for the next run.

Generated data is kept under the data directory (bench/data by default,
gitignored) with a marker file written last (`once`), so a second run
reuses it and a run killed while generating starts again.  Bytes are
random from a fixed seed (incompressible, undeduplicable, the same every
run).
"""

from __future__ import annotations

import os
import shutil
from typing import Callable

from harness import Context, human_bytes, say, sync


def once(path: str, make: Callable[[str], object]) -> str:
    """What `make(path)` answered when it generated `path`, which it does only
    if no marker says an earlier run finished it (from nothing: what a killed
    run left is removed first)."""
    marker = path + ".ok"
    if not os.path.exists(marker):
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.unlink(path)
        answer = make(path)
        sync()
        with open(marker, "w") as f:
            f.write(f"{'' if answer is None else answer}\n")
    with open(marker) as f:
        return f.read().strip()


def small_files(ctx: Context, n: int, sizes: tuple[int, int] = (400, 600), name: str = "small") -> tuple[str, int]:
    """A tree of `n` files of sizes[0]-sizes[1] random bytes, 1,000 per
    directory: (its root, its bytes in all)."""

    def make(root: str) -> int:
        import numpy as np

        say(f"  (generating {n:,} files of {sizes[0]:,}-{sizes[1]:,} bytes in {root})")
        rng = np.random.default_rng(n)
        lengths = rng.integers(sizes[0], sizes[1] + 1, n)
        blob = rng.bytes(int(lengths.sum()))
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        for i in range(n):
            if i % 1000 == 0:
                directory = os.path.join(root, f"d{i // 1000:04d}")
                os.makedirs(directory)
            fd = os.open(os.path.join(directory, f"f{i % 1000:04d}.bin"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, blob[offsets[i] : offsets[i + 1]])
            os.close(fd)
        return len(blob)

    root = os.path.join(ctx.data_dir, f"{name}-{n}")
    return root, int(once(root, make))


def big_file(ctx: Context, nbytes: int) -> str:
    """One file of `nbytes` random (incompressible, undeduplicable) bytes."""

    def make(path: str) -> None:
        import numpy as np

        say(f"  (generating a {human_bytes(nbytes)} file {path})")
        rng = np.random.default_rng(nbytes)
        with open(path, "wb") as f:
            left = nbytes
            while left:
                n = min(left, 64 << 20)
                f.write(rng.bytes(n))
                left -= n

    path = os.path.join(ctx.data_dir, f"big-{nbytes}.bin")
    once(path, make)
    return path
