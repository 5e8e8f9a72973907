"""Writes bench/models/noop.onnx: an Identity on FP32 [N, 4], the "model that does
nothing" of the serving benchmark (its compute is a copy, so what is measured is
runinfer's own cost per request).

    $(scripts/python-env.sh) bench/make_noop_model.py
"""

import pathlib

import onnx
from onnx import TensorProto, helper

path = pathlib.Path(__file__).resolve().parent / "models" / "noop.onnx"
graph = helper.make_graph(
    [helper.make_node("Identity", ["input"], ["output"])],
    "noop",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
    [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 4])],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="runinfer-bench")
model.ir_version = 8
onnx.checker.check_model(model)
path.parent.mkdir(exist_ok=True)
onnx.save(model, path)
print(f"wrote {path} ({path.stat().st_size} bytes)")
