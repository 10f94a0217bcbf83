"""Step `report`: score one batch's predictions against its true labels.

Each datum is a join on the batch number: /pfs/inference/N.csv (id,predicted)
and /pfs/labels/N.csv (id,species).  Writes /pfs/out/N.json with the batch's
accuracy and every sample it got wrong.
"""

import csv
import glob
import json
import os

# /pfs inside dpl's bubblewrap sandbox; without bubblewrap dpl runs the step as a
# plain subprocess and puts the datum's real /pfs directory in $PFS.
PFS = os.environ.get("PFS", "/pfs")


def read(pattern):
    (path,) = glob.glob(pattern)
    with open(path, newline="") as f:
        return os.path.basename(path), list(csv.DictReader(f))


name, predictions = read(f"{PFS}/inference/*.csv")
_, labels = read(f"{PFS}/labels/*.csv")
truth = {r["id"]: r["species"] for r in labels}
scored = [(r["id"], r["predicted"], truth.get(r["id"])) for r in predictions]
correct = sum(1 for _, p, t in scored if p == t)
report = {
    "batch": name[: -len(".csv")],
    "samples": len(scored),
    "correct": correct,
    "accuracy": round(correct / len(scored), 4) if scored else None,
    "mistakes": [{"id": i, "predicted": p, "actual": t} for i, p, t in scored if p != t],
}
with open(f"{PFS}/out/{report['batch']}.json", "w") as f:
    json.dump(report, f, indent=2)
    f.write("\n")
print(f"batch {report['batch']}: {correct}/{len(scored)} correct")
