#!/usr/bin/env python3
"""Write the demo's data set: iris (shipped with scikit-learn), split as the demo uses it.

    python demo/make_data.py DIR

DIR/training-v1/iris.csv   the first 40 labelled flowers (the first training commit)
DIR/training-v2/iris.csv   all 115 training flowers (the change the demo makes)
DIR/attributes/1..4.csv    7 unlabelled samples each (id + four measurements)
DIR/attributes-later/5.csv the batch that arrives later
DIR/labels/1..5.csv        the true species of every batch (id,species)

Deterministic: the same split every time, nothing is downloaded.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
BATCH = 7  # samples per attributes file
BATCHES = 5  # 1.csv .. 4.csv at first, 5.csv arrives later
FIRST_TRAINING_ROWS = 40
SEED = 4


def write_csv(path: Path, header: list[str], rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def make_data(out: Path) -> dict:
    import numpy as np
    from sklearn.datasets import load_iris

    iris = load_iris()
    species = [str(s) for s in iris.target_names]
    order = np.random.RandomState(SEED).permutation(len(iris.target))
    held, pool = order[: BATCH * BATCHES], order[BATCH * BATCHES :]

    def measures(i):
        return [f"{v:.1f}" for v in iris.data[i]]

    training = [measures(i) + [species[iris.target[i]]] for i in pool]
    write_csv(out / "training-v1" / "iris.csv", FEATURES + ["species"], training[:FIRST_TRAINING_ROWS])
    write_csv(out / "training-v2" / "iris.csv", FEATURES + ["species"], training)
    for b in range(BATCHES):
        ids = held[b * BATCH : (b + 1) * BATCH]
        folder = "attributes" if b < BATCHES - 1 else "attributes-later"
        write_csv(out / folder / f"{b + 1}.csv", ["id"] + FEATURES, ([f"s{i:03d}"] + measures(i) for i in ids))
        write_csv(out / "labels" / f"{b + 1}.csv", ["id", "species"], ([f"s{i:03d}", species[iris.target[i]]] for i in ids))
    return {"training_rows": [FIRST_TRAINING_ROWS, len(training)], "batches": BATCHES, "samples_per_batch": BATCH}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(make_data(Path(sys.argv[1])))
