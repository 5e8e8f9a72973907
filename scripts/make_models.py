"""Builds the bundled ONNX models, the example data and the golden outputs.

Run with the venv of scripts/python-env.sh:
    $(scripts/python-env.sh) scripts/make_models.py

Outputs (all committed, so building and testing need no Python):
  plugins/iris/models/iris.onnx          MLP trained on the Iris data (skl2onnx)
  plugins/onnx-tensor/models/tiny_mlp*.onnx  small two-output MLPs on [N, 2, 3] inputs
  examples/iris.jsonl, examples/tensors.jsonl
  tests/golden/*.jsonl                    onnxruntime's outputs
  tests/models/iris_scaler.onnx          a StandardScaler pipeline: the ONNX-ML Scaler
                                         op, which tract lacks and onnxruntime runs

    $(scripts/python-env.sh) scripts/make_models.py [NAME...]   # only these
"""

import json
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

ROOT = pathlib.Path(__file__).resolve().parent.parent


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row, separators=(",", ":")) + "\n")


def f32_list(a):
    # float32 -> shortest decimal that reads back as the same float32
    return [float(np.format_float_positional(np.float32(v), unique=True)) for v in a]


def iris():
    data = load_iris()
    x = data.data.astype(np.float32)
    # No scaler step (tract has no ONNX-ML Scaler) and zipmap=False (no ZipMap).
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=3000, random_state=0)
    clf.fit(x, data.target)
    model = convert_sklearn(
        clf,
        "iris",
        initial_types=[("input", FloatTensorType([None, 4]))],
        options={id(clf): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    path = ROOT / "plugins/iris/models/iris.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels, probs = sess.run(["label", "probabilities"], {"input": x})
    names = list(data.target_names)
    write_jsonl(ROOT / "examples/iris.jsonl", [f32_list(row) for row in x])
    write_jsonl(
        ROOT / "tests/golden/iris.jsonl",
        [
            {
                "example": f32_list(row),
                "species": names[t],
                "label": names[int(l)],
                "probabilities": f32_list(p),
            }
            for row, t, l, p in zip(x, data.target, labels, probs)
        ],
    )
    accuracy = float((labels == data.target).mean())
    print(f"iris: {path.relative_to(ROOT)}, training accuracy {accuracy:.3f}")


def tiny_mlp(name="tiny_mlp", seed=7, write_examples=True):
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.5, (6, 5)).astype(np.float32)
    b1 = rng.normal(0, 0.1, (5,)).astype(np.float32)
    w2 = rng.normal(0, 0.5, (5, 3)).astype(np.float32)
    b2 = rng.normal(0, 0.1, (3,)).astype(np.float32)
    nodes = [
        helper.make_node("Flatten", ["x"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["hidden"]),
        helper.make_node("MatMul", ["hidden", "w2"], ["l0"]),
        helper.make_node("Add", ["l0", "b2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["N", 5]),
        ],
        [numpy_helper.from_array(a, n) for a, n in [(w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2")]],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = ROOT / f"plugins/onnx-tensor/models/{name}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)

    # The same inputs for every variant, so per-key model tests can compare them.
    x = np.random.default_rng(7 + 1000).normal(0, 1, (64, 2, 3)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, hidden = sess.run(["logits", "hidden"], {"x": x})
    examples = [[f32_list(r) for r in ex] for ex in x]
    if write_examples:
        write_jsonl(ROOT / "examples/tensors.jsonl", examples)
    write_jsonl(
        ROOT / f"tests/golden/{name}.jsonl",
        [
            {"example": ex, "logits": f32_list(l), "hidden": f32_list(h)}
            for ex, l, h in zip(examples, logits, hidden)
        ],
    )
    print(f"{name}: {path.relative_to(ROOT)}")


def iris_scaler():
    data = load_iris()
    x = data.data.astype(np.float32)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    pipe.fit(x, data.target)
    model = convert_sklearn(
        pipe,
        "iris_scaler",
        initial_types=[("input", FloatTensorType([None, 4]))],
        options={id(pipe.steps[-1][1]): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    assert any(n.op_type == "Scaler" for n in model.graph.node)
    path = ROOT / "tests/models/iris_scaler.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels, probs = sess.run(["label", "probabilities"], {"input": x})
    write_jsonl(
        ROOT / "tests/golden/iris_scaler.jsonl",
        [
            {"example": f32_list(row), "label": int(l), "probabilities": f32_list(p)}
            for row, l, p in zip(x, labels, probs)
        ],
    )
    print(f"iris_scaler: {path.relative_to(ROOT)}")


BUILDERS = {
    "iris": iris,
    "tiny_mlp": tiny_mlp,
    # Other weights, same architecture: per-key models in the tests.
    "tiny_mlp_v2": lambda: tiny_mlp("tiny_mlp_v2", seed=8, write_examples=False),
    "tiny_mlp_v3": lambda: tiny_mlp("tiny_mlp_v3", seed=9, write_examples=False),
    "iris_scaler": iris_scaler,
}

if __name__ == "__main__":
    for name in sys.argv[1:] or BUILDERS:
        BUILDERS[name]()
