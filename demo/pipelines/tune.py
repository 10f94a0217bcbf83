"""Step `tuning`: train one decision tree for one combination of a sweep.

Each datum is one params file of the `depths` repo (written by `dpl sweep
create`, e.g. depth=3.json holding {"depth": 3}) crossed with the training
data.  Writes /pfs/out/depth=3/model.pkl and /pfs/out/depth=3/metrics.json,
which `dpl metrics tuning@master` reads back per combination.
"""

import csv
import glob
import json
import os
import pickle

from sklearn.model_selection import cross_val_score
from sklearn.tree import DecisionTreeClassifier

# /pfs inside dpl's bubblewrap sandbox; without bubblewrap dpl runs the step as a
# plain subprocess and puts the datum's real /pfs directory in $PFS.
PFS = os.environ.get("PFS", "/pfs")
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

(params_file,) = glob.glob(f"{PFS}/depths/*.json")
with open(params_file) as f:
    params = json.load(f)
with open(f"{PFS}/training/iris.csv", newline="") as f:
    rows = list(csv.DictReader(f))
X = [[float(r[c]) for c in FEATURES] for r in rows]
y = [r["species"] for r in rows]

model = DecisionTreeClassifier(max_depth=params["depth"], random_state=0)
cv = cross_val_score(model, X, y, cv=5)
model.fit(X, y)

out = f"{PFS}/out/{os.path.basename(params_file)[: -len('.json')]}"
os.makedirs(out, exist_ok=True)
with open(f"{out}/model.pkl", "wb") as f:
    pickle.dump({"features": FEATURES, "model": model}, f)
metrics = {"train_accuracy": round(float(model.score(X, y)), 4), "cv_accuracy": round(float(cv.mean()), 4),
           "leaves": int(model.get_n_leaves())}
with open(f"{out}/metrics.json", "w") as f:
    json.dump(metrics, f, indent=2, sort_keys=True)
    f.write("\n")
print(f"depth {params['depth']}: cv accuracy {metrics['cv_accuracy']}")
