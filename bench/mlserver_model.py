"""Writes an MLServer model repository serving the iris MLP with MLServer's
scikit-learn runtime: the same model as plugins/iris (scripts/make_models.py trains
it the same way: MLPClassifier(16), random_state=0, on the Iris data), so the two
servers answer the same requests with the same network.

    python bench/mlserver_model.py DIR HTTP_PORT GRPC_PORT METRICS_PORT
"""

import json
import sys
from pathlib import Path

import joblib
import numpy as np
from sklearn.datasets import load_iris
from sklearn.neural_network import MLPClassifier

out, http_port, grpc_port, metrics_port = Path(sys.argv[1]), *map(int, sys.argv[2:5])
data = load_iris()
clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=3000, random_state=0)
clf.fit(data.data.astype(np.float32), data.target)
model = out / "iris"
model.mkdir(parents=True, exist_ok=True)
joblib.dump(clf, model / "model.joblib")
(model / "model-settings.json").write_text(
    json.dumps({"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel", "parameters": {"uri": "./model.joblib"}})
)
# parallel_workers 0: inference in the server process (its worker processes fail to
# start with the uvloop that pip installs today).
(out / "settings.json").write_text(
    json.dumps(
        {
            "parallel_workers": 0,
            "host": "127.0.0.1",
            "http_port": http_port,
            "grpc_port": grpc_port,
            "metrics_port": metrics_port,
        }
    )
)
print(model)
