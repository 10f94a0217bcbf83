"""The data benchmarks run on, generated once and kept for the next run.

Generated data is kept under the data directory (bench/data by default,
gitignored) with a marker file written last, so a second run reuses it and
a run killed while generating starts again.  Bytes are random from a fixed
seed (incompressible, undeduplicable, the same every run).
"""

from __future__ import annotations

import os
import shutil

from harness import Context, human_bytes, say, sync


def small_files(ctx: Context, n: int, sizes: tuple[int, int] = (400, 600), name: str = "small") -> tuple[str, int]:
    """A tree of `n` files of sizes[0]-sizes[1] random bytes, 1,000 per
    directory: (its root, its bytes in all)."""
    root = os.path.join(ctx.data_dir, f"{name}-{n}")
    marker = root + ".ok"
    if not os.path.exists(marker):
        import numpy as np

        shutil.rmtree(root, ignore_errors=True)
        say(f"  (generating {n:,} files of {sizes[0]:,}-{sizes[1]:,} bytes in {root})")
        rng = np.random.default_rng(n)
        lengths = rng.integers(sizes[0], sizes[1] + 1, n)
        total = int(lengths.sum())
        blob = rng.bytes(total)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        for i in range(n):
            if i % 1000 == 0:
                directory = os.path.join(root, f"d{i // 1000:04d}")
                os.makedirs(directory)
            fd = os.open(os.path.join(directory, f"f{i % 1000:04d}.bin"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, blob[offsets[i] : offsets[i + 1]])
            os.close(fd)
        sync()
        with open(marker, "w") as f:
            f.write(f"{total}\n")
    with open(marker) as f:
        return root, int(f.read())


def big_file(ctx: Context, nbytes: int) -> str:
    """One file of `nbytes` random (incompressible, undeduplicable) bytes."""
    path = os.path.join(ctx.data_dir, f"big-{nbytes}.bin")
    marker = path + ".ok"
    if not os.path.exists(marker):
        import numpy as np

        say(f"  (generating a {human_bytes(nbytes)} file {path})")
        rng = np.random.default_rng(nbytes)
        with open(path, "wb") as f:
            left = nbytes
            while left:
                n = min(left, 64 << 20)
                f.write(rng.bytes(n))
                left -= n
        sync()
        open(marker, "w").close()
    return path
