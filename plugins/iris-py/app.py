"""Iris classifier in Python (componentize-py), the same handler as plugins/iris:
an example is the four measurements of a flower; the inference is the species name
and the probability of each species. The model runs in the host (tract)."""

import json
import struct
from typing import List, Optional, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import handler_api
from wit_world.imports import inference, types

DEFAULT_LABELS = ["setosa", "versicolor", "virginica"]

# componentize-py may construct the export class for each call: state lives here.
state = {"labels": DEFAULT_LABELS, "model": None}


def error(code: types.ErrorCode, message: str) -> Err:
    return Err(types.Error(code=code, message=message))


def f32_repr(x: float) -> float:
    """The shortest decimal that reads back as the same f32, as the Rust handler prints."""
    for digits in range(6, 10):
        short = float(f"{x:.{digits}g}")
        if struct.unpack("<f", struct.pack("<f", short))[0] == x:
            return short
    return x


class HandlerApi(exports.HandlerApi):
    def init(self, args: List[Tuple[str, str]]) -> handler_api.HandlerInfo:
        labels = dict(args).get("labels")
        if labels is not None:
            state["labels"] = [label.strip() for label in labels.split(",")]
        return handler_api.HandlerInfo(
            metrics_namespace=None,
            batching=handler_api.Batching(min_batch_size=1, max_batch_size=64, max_batch_duration_ms=10),
            resource_hints=handler_api.ResourceHints(min_ram_mb=None, accelerator=None),
            share_model=True,
            input=handler_api.InputKind_Tensor(handler_api.TensorSpec(dtype=types.Dtype.F32, shape=[4])),
        )

    def load_model(self) -> None:
        state["model"] = inference.Model.open("iris")

    def update_model_path(self, model: str, path: Optional[str]) -> None:
        pass  # load_model follows and opens the model by name again

    def run_inference(self, batch: List[types.Value], args: List[Tuple[str, str]]) -> List[types.Value]:
        model = state["model"]
        if model is None:
            raise error(types.ErrorCode.INTERNAL, "load_model was not called")
        tensors = []
        for example in batch:
            if not isinstance(example, types.Value_Tensor):
                raise error(types.ErrorCode.INVALID_INPUT, "iris takes tensor examples")
            tensors.append(example.value)
        features = types.Tensor.stack(tensors)
        outputs = dict(model.run([("input", features)]))
        labels = outputs["label"].to_i64()
        probabilities = outputs["probabilities"].to_f32()
        names = state["labels"]
        classes = len(names)
        if len(labels) != len(batch) or len(probabilities) != len(batch) * classes:
            raise error(types.ErrorCode.MODEL, f"expected {len(batch)} labels and {len(batch)}x{classes} probabilities")
        results: List[types.Value] = []
        for row, label in enumerate(labels):
            if not 0 <= label < classes:
                raise error(types.ErrorCode.MODEL, f"label index {label} out of range")
            probs = probabilities[row * classes : (row + 1) * classes]
            inference_json = {"label": names[label], "probabilities": {n: f32_repr(p) for n, p in zip(names, probs)}}
            results.append(types.Value_Json(json.dumps(inference_json, separators=(",", ":"))))
        return results
