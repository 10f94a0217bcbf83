"""Step `inference`: predict the species of one batch of samples.

Each datum is the model crossed with one attributes file, so /pfs/model holds
model.pkl and /pfs/attributes holds exactly one N.csv (id + four
measurements).  Writes /pfs/out/N.csv with one `id,predicted` row per sample.
"""

import csv
import glob
import os
import pickle

# /pfs inside dpl's bubblewrap sandbox; without bubblewrap dpl runs the step as a
# plain subprocess and puts the datum's real /pfs directory in $PFS.
PFS = os.environ.get("PFS", "/pfs")

with open(f"{PFS}/model/model.pkl", "rb") as f:
    saved = pickle.load(f)

for path in sorted(glob.glob(f"{PFS}/attributes/*.csv")):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    X = [[float(r[c]) for c in saved["features"]] for r in rows]
    predicted = saved["model"].predict(X) if X else []
    name = os.path.basename(path)
    with open(f"{PFS}/out/{name}", "w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["id", "predicted"])
        out.writerows([r["id"], p] for r, p in zip(rows, predicted))
    print(f"{name}: {len(rows)} samples predicted")
