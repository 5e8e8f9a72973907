"""runinfer plugins in Ray Data: a callable class for `Dataset.map_batches`.

    import ray
    from runinfer_ray import RuninferPredictor

    predictions = ds.map_batches(
        RuninferPredictor,
        fn_constructor_kwargs={"plugin": "iris", "plugin_dir": "/opt/plugins", "columns": ["features"]},
        concurrency=2,          # an actor pool
        batch_size=64,
        batch_format="numpy",
    )

Each node runs one `runinfer serve`, shared by the actors on it
(`runinfer_client.MachineServer`): started by the first actor, started again if it
dies, stopped when the last actor is gone. Each batch goes to it as one binary Open
Inference Protocol request; the handler's declared outputs (contract 0.2) come back
as columns, named as the signature names them (`output` for an unnamed one).
"""

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np
from runinfer_client import MachineServer, RuninferError, default_binary

__all__ = ["RuninferPredictor"]


class RuninferPredictor:
    """Runs the runinfer plugin `plugin` on Ray Data batches.

    Args:
      plugin: the plugin's directory name in `plugin_dir`.
      columns: the batch columns to send, one per declared input in the signature's
        order (default: the input names the signature declares, or `["input"]`).
      plugin_dir, binary: the plugin root and the `runinfer` executable on every node
        (default `$RUNINFER_PLUGINS` / `./plugins`, `$RUNINFER_BIN` / `runinfer`).
      serve_args: more `runinfer serve` arguments.
      keep_inputs: keep the input columns in the output batch (default True).
    """

    def __init__(
        self,
        plugin: str,
        columns: Optional[Sequence[str]] = None,
        plugin_dir: Optional[str] = None,
        binary: Optional[str] = None,
        serve_args: Sequence[str] = (),
        timeout_s: float = 300.0,
        keep_inputs: bool = True,
    ):
        plugin_dir = str(Path(plugin_dir or os.environ.get("RUNINFER_PLUGINS", "plugins")).resolve())
        self._plugin = plugin
        self._server = MachineServer(default_binary(binary), plugin_dir, ["--max-batch-duration-ms", "0", *serve_args])
        self._meta = self._server.model_metadata(plugin)
        declared = [i["name"] for i in self._meta["inputs"]]
        self._columns = list(columns) if columns is not None else declared
        if len(self._columns) != len(declared):
            raise RuninferError(f"plugin '{plugin}' takes {len(declared)} inputs {declared}; columns={self._columns}")
        self._timeout_us = int(timeout_s * 1e6)
        self._keep_inputs = keep_inputs

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, Any]:
        missing = [c for c in self._columns if c not in batch]
        if missing:
            raise RuninferError(f"the batch has no column {missing} (columns: {sorted(batch)})")
        inputs = [_stacked(batch[c]) for c in self._columns]
        outputs, model_id = self._server.infer_columns(self._plugin, inputs, self._timeout_us)
        result: Dict[str, Any] = dict(batch) if self._keep_inputs else {}
        for name, values in outputs.items():
            if isinstance(values, np.ndarray):
                result[name] = values
            else:
                content = next((o.get("parameters", {}).get("content_type") for o in self._meta["outputs"] if o["name"] == name), None)
                result[name] = np.array([json.dumps(v) if content == "json" else v for v in values], dtype=object)
        result["model_id"] = np.array([model_id or ""] * len(inputs[0]), dtype=object)
        return result


def _stacked(column: Any) -> Any:
    """Ray hands a column of per-row arrays as an object array: stack it."""
    if isinstance(column, np.ndarray) and column.dtype == object and len(column) and isinstance(column[0], np.ndarray):
        return np.stack(column)
    return column
