"""Step `model`: train a classifier on /pfs/training/iris.csv.

Writes /pfs/out/model.pkl (the fitted scikit-learn model) and
/pfs/out/metrics.json (training size, training and cross-validated accuracy).
Deterministic: the same iris.csv always gives the same bytes.
"""

import csv
import json
import os
import pickle

from sklearn.model_selection import cross_val_score
from sklearn.tree import DecisionTreeClassifier

# /pfs inside dpl's bubblewrap sandbox; without bubblewrap dpl runs the step as a
# plain subprocess and puts the datum's real /pfs directory in $PFS.
PFS = os.environ.get("PFS", "/pfs")

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

with open(f"{PFS}/training/iris.csv", newline="") as f:
    rows = list(csv.DictReader(f))
X = [[float(r[c]) for c in FEATURES] for r in rows]
y = [r["species"] for r in rows]

model = DecisionTreeClassifier(max_depth=3, random_state=0)
cv = cross_val_score(model, X, y, cv=5)
model.fit(X, y)

with open(f"{PFS}/out/model.pkl", "wb") as f:
    pickle.dump({"features": FEATURES, "model": model}, f)
metrics = {
    "model": "DecisionTreeClassifier(max_depth=3)",
    "train_rows": len(rows),
    "classes": sorted(set(y)),
    "train_accuracy": round(float(model.score(X, y)), 4),
    "cv_accuracy": round(float(cv.mean()), 4),
}
with open(f"{PFS}/out/metrics.json", "w") as f:
    json.dump(metrics, f, indent=2, sort_keys=True)
    f.write("\n")
print(f"trained on {len(rows)} rows: cv accuracy {metrics['cv_accuracy']}")
