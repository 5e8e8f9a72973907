"""runinfer plugins in Apache Spark, through Spark's own API for model inference on
DataFrames (`pyspark.ml.functions.predict_batch_udf`), or `mapInPandas`.

    from runinfer_spark import runinfer_udf

    iris = runinfer_udf("iris", plugin_dir="/opt/plugins", binary="/opt/runinfer")
    df.withColumn("prediction", iris("features"))   # struct<label: string, probabilities: array<float>>

Each executor machine runs one `runinfer serve`, shared by its Python workers
(`runinfer_client.MachineServer`): started by the first batch that needs it, started
again if it dies, stopped when the last worker is gone. Each Arrow batch goes to it
as one binary Open Inference Protocol request. The result type is the handler's
declared outputs (contract 0.2), read with `runinfer inspect` on the driver.

Ship the binary and the plugin root to the executors the usual Spark way: a path
present on every node, or `--archives runinfer.tar.gz#runinfer` (then
`binary="runinfer/runinfer"`, `plugin_dir="runinfer/plugins"`, relative to the
executors' working directory; `scripts/package.sh` writes such a directory).
"""

from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
from runinfer_client import MachineServer, RuninferError, default_binary, inspect

__all__ = ["make_predict_fn", "return_type", "input_tensor_shapes", "runinfer_udf", "map_in_pandas"]

# The handler's dtype names -> Spark SQL type names.
SPARK_TYPES = {
    "f32": "float",
    "f64": "double",
    "f16": "float",
    "bf16": "float",
    "i64": "long",
    "i32": "int",
    "i16": "short",
    "i8": "byte",
    "u8": "short",
    "u16": "int",
    "u32": "long",
    "u64": "long",
    "bool": "boolean",
}


def _resolve(plugin_dir: Optional[str]) -> str:
    import os
    from pathlib import Path

    return str(Path(plugin_dir or os.environ.get("RUNINFER_PLUGINS", "plugins")).resolve())


def _tensor_type(spec: Dict[str, Any], what: str):
    from pyspark.sql import types as T

    shape = spec.get("shape")
    if shape is None:
        raise RuninferError(f"{what}: a tensor of any rank has no Spark type; declare its shape in the signature")
    element = T._parse_datatype_string(SPARK_TYPES[spec["dtype"]])
    for _ in shape:
        element = T.ArrayType(element)
    return element


def return_type(plugin: str, plugin_dir: Optional[str] = None, binary: Optional[str] = None):
    """The Spark type of the plugin's declared outputs: a struct of its named fields
    (text → string, tensors → arrays of their rank), an array or a scalar for a tensor
    output, a string for text and JSON (the JSON text)."""
    from pyspark.sql import types as T

    outputs = inspect(plugin, _resolve(plugin_dir), binary)["handler"]["signature"]["outputs"]
    kind = outputs["kind"]
    if kind == "fields":
        return T.StructType(
            [
                T.StructField(f["name"], T.StringType() if f["kind"] == "text" else _tensor_type(f, f["name"]))
                for f in outputs["fields"]
            ]
        )
    if kind == "tensor":
        return _tensor_type(outputs, "output")
    return T.StringType()


def input_tensor_shapes(plugin: str, plugin_dir: Optional[str] = None, binary: Optional[str] = None) -> List[Optional[List[int]]]:
    """`predict_batch_udf`'s `input_tensor_shapes`: per declared input, the shape of one
    example (Spark reshapes each row's flat array to it), `None` for text."""
    inputs = inspect(plugin, _resolve(plugin_dir), binary)["handler"]["signature"]["inputs"]
    specs = inputs["fields"] if inputs["kind"] == "fields" else [inputs]
    shapes = []
    for spec in specs:
        if spec["kind"] != "tensor":
            shapes.append(None)
        elif spec.get("shape") is None or any(d is None for d in spec["shape"]):
            raise RuninferError(f"input {spec.get('name', 'input')}: Spark needs fixed example shapes, the signature says {spec.get('shape')}")
        else:
            shapes.append(list(spec["shape"]))
    return shapes


def make_predict_fn(
    plugin: str,
    plugin_dir: Optional[str] = None,
    binary: Optional[str] = None,
    serve_args: Sequence[str] = (),
    timeout_s: float = 300.0,
) -> Callable[[], Callable[..., Any]]:
    """`make_predict_fn` for `predict_batch_udf`: on each Python worker, attaches to (or
    starts) the machine's server and returns `predict(*columns)`, which sends the batch
    (one column per declared input, in the signature's order) as one request and
    returns what `return_type` declares: a dict of columns for named outputs, else the
    one column."""
    plugin_dir, binary = _resolve(plugin_dir), default_binary(binary)
    args = ["--max-batch-duration-ms", "0", *serve_args]

    def make() -> Callable[..., Any]:
        server = MachineServer(binary, plugin_dir, args)
        meta = server.model_metadata(plugin)  # fails if the plugin is not live

        def predict(*columns: np.ndarray):
            outputs, _ = server.infer_columns(plugin, columns, timeout_us=int(timeout_s * 1e6))
            return _spark_columns(outputs, meta["outputs"])

        return predict

    return make


def _spark_columns(outputs: Dict[str, Any], declared: Sequence[Dict[str, Any]]):
    """What `predict_batch_udf` takes back: numpy arrays (strings as object arrays; JSON
    as its text), a dict for a struct."""

    def column(name: str, values: Any) -> np.ndarray:
        if isinstance(values, np.ndarray):
            return values
        content = next((o.get("parameters", {}).get("content_type") for o in declared if o["name"] == name), None)
        import json

        return np.array([json.dumps(v) if content == "json" else v for v in values], dtype=object)

    if list(outputs) == ["output"] and len(declared) == 1:
        return column("output", outputs["output"])
    return {name: column(name, values) for name, values in outputs.items()}


def runinfer_udf(
    plugin: str,
    plugin_dir: Optional[str] = None,
    binary: Optional[str] = None,
    batch_size: int = 64,
    serve_args: Sequence[str] = (),
):
    """A `predict_batch_udf` for the plugin, typed from its signature: call it on one
    column per declared input."""
    from pyspark.ml.functions import predict_batch_udf

    shapes = input_tensor_shapes(plugin, plugin_dir, binary)
    return predict_batch_udf(
        make_predict_fn(plugin, plugin_dir, binary, serve_args),
        return_type=return_type(plugin, plugin_dir, binary),
        batch_size=batch_size,
        input_tensor_shapes=shapes if any(s is not None for s in shapes) else None,
    )


def map_in_pandas(
    plugin: str,
    columns: Sequence[str],
    plugin_dir: Optional[str] = None,
    binary: Optional[str] = None,
    serve_args: Sequence[str] = (),
) -> Callable:
    """A function for `df.mapInPandas(fn, schema)`: each pandas batch's `columns` (one
    per declared input; array columns are stacked) go as one request; the outputs are
    added as columns named as the signature names them (`output` for an unnamed one).
    The schema is the input's plus those columns (see `return_type`)."""
    make = make_predict_fn(plugin, plugin_dir, binary, serve_args)

    def run(batches):
        predict = make()
        for frame in batches:
            inputs = [np.stack(frame[c].to_numpy()) if frame[c].dtype == object and len(frame) and not isinstance(frame[c].iloc[0], (str, bytes)) else frame[c].to_numpy() for c in columns]
            out = predict(*inputs)
            if not isinstance(out, dict):
                out = {"output": out}
            for name, values in out.items():
                frame[name] = list(values) if getattr(values, "ndim", 1) > 1 else values
            yield frame

    return run
