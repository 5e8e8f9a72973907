"""Iris classifier in Python (componentize-py), the same handler as plugins/iris:
an example is the four measurements of a flower; the inference is the species name
(`label`) and the probability of each species (`probabilities`, f32 [3]). The model
runs in the host (tract)."""

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


class HandlerApi(exports.HandlerApi):
    def init(self, args: List[Tuple[str, str]]) -> handler_api.HandlerInfo:
        labels = dict(args).get("labels")
        if labels is not None:
            state["labels"] = [label.strip() for label in labels.split(",")]
        return handler_api.HandlerInfo(
            metrics_namespace=None,
            batching=handler_api.Batching(min_batch_size=1, max_batch_size=64, max_batch_duration_ms=10),
            resource_hints=handler_api.ResourceHints(min_ram_mb=None, accelerator=None),
        )

    def get_signature(self) -> types.Signature:
        classes = len(state["labels"])
        probabilities = types.FieldKind_Tensor(types.TensorSpec(dtype=types.Dtype.F32, shape=[classes]))
        return types.Signature(
            inputs=types.ValueKind_Tensor(types.TensorSpec(dtype=types.Dtype.F32, shape=[4])),
            outputs=types.ValueKind_Fields(
                [
                    types.FieldSpec(name="label", kind=types.FieldKind_Text()),
                    types.FieldSpec(name="probabilities", kind=probabilities),
                ]
            ),
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
        # Split in the host: the probabilities never enter guest memory.
        probabilities = outputs["probabilities"].unstack()
        names = state["labels"]
        if len(labels) != len(batch) or len(probabilities) != len(batch):
            raise error(types.ErrorCode.MODEL, f"expected {len(batch)} labels and {len(batch)} rows of probabilities")
        results: List[types.Value] = []
        for label, probs in zip(labels, probabilities):
            if not 0 <= label < len(names):
                raise error(types.ErrorCode.MODEL, f"label index {label} out of range")
            fields = [("label", types.Field_Text(names[label])), ("probabilities", types.Field_Tensor(probs))]
            results.append(types.Value_Fields(fields))
        return results
