"""Apache Beam `RunInference` on runinfer plugins.

    from apache_beam.ml.inference.base import RunInference
    from runinfer_beam import RuninferModelHandler

    predictions = examples | RunInference(RuninferModelHandler("iris", plugin_dir="plugins"))

Like Beam's own model-server handlers (vLLM), the handler runs one local
`runinfer serve` per worker machine, shared by the worker's processes, on a free
loopback port; it is health-checked and started again if it dies. Each batch goes to
it as one Open Inference Protocol v2 request.
"""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from runinfer_client import RuninferError, RuninferServer

__all__ = ["RuninferModelHandler", "RuninferServer", "RuninferError"]


class RuninferModelHandler(ModelHandler[Any, PredictionResult, RuninferServer]):
    """A Beam `ModelHandler` that runs the runinfer plugin `plugin`.

    Args:
      plugin: the plugin's directory name in `plugin_dir`.
      plugin_dir: the plugin root (default `$RUNINFER_PLUGINS`, else `./plugins`). Ship
        it to the workers with the pipeline (a container image, or `--files`).
      binary: the `runinfer` executable (default `$RUNINFER_BIN`, else `runinfer` on
        `PATH`).
      serve_args: more `runinfer serve` arguments (for example `--pooling 16`).
      timeout_s: longest a batch may wait for its predictions.
      min_batch_size, max_batch_size, max_batch_duration_secs: override the plugin's
        batching (its handler's declaration, then `plugin.toml`).

    Examples are what the plugin's signature takes (`runinfer inspect`): numbers or
    arrays (numpy or lists) for a tensor, a mapping of input name to array for named
    inputs (like Beam's keyed-tensor handlers: `{"input_ids": ..., "attention_mask":
    ...}`), strings, bytes or JSON-able values for text, bytes and JSON handlers.
    Inferences are what its outputs declare: a dict of arrays (and strings) for named
    outputs, an array, or the handler's JSON. Each `PredictionResult` carries the id of
    the model file that made it.
    """

    def __init__(
        self,
        plugin: str,
        plugin_dir: Optional[str] = None,
        binary: Optional[str] = None,
        serve_args: Sequence[str] = (),
        timeout_s: float = 300.0,
        min_batch_size: Optional[int] = None,
        max_batch_size: Optional[int] = None,
        max_batch_duration_secs: Optional[float] = None,
    ):
        self._plugin = plugin
        self._plugin_dir = str(Path(plugin_dir or os.environ.get("RUNINFER_PLUGINS", "plugins")).resolve())
        self._binary = binary or os.environ.get("RUNINFER_BIN") or shutil.which("runinfer") or "runinfer"
        self._serve_args = list(serve_args)
        self._timeout_s = timeout_s
        self._batching_overrides = {
            "min_batch_size": min_batch_size,
            "max_batch_size": max_batch_size,
            "max_batch_duration_secs": max_batch_duration_secs,
        }
        self._info: Optional[Dict[str, Any]] = None
        self._pending_model_id: Optional[str] = None
        self._model_uri: Optional[str] = None
        # Beam's base class keeps its own batching and model-copies settings.
        super().__init__()

    # --- what the plugin declares, read once with `runinfer inspect` ---

    def _plugin_info(self) -> Dict[str, Any]:
        if self._info is None:
            out = subprocess.run(
                [self._binary, "inspect", self._plugin, "--plugins", self._plugin_dir],
                capture_output=True, text=True,
            )
            if out.returncode != 0:
                raise RuninferError(f"runinfer inspect {self._plugin}: {out.stderr.strip()}")
            self._info = json.loads(out.stdout)
        return self._info

    def get_metrics_namespace(self) -> str:
        return self._plugin_info()["namespace"]

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        batching = self._plugin_info()["batching"]
        duration = batching["max_batch_duration"]
        kwargs = {
            "min_batch_size": batching["min_batch_size"],
            "max_batch_size": batching["max_batch_size"],
            "max_batch_duration_secs": duration["secs"] + duration["nanos"] / 1e9,
        }
        kwargs.update({k: v for k, v in self._batching_overrides.items() if v is not None})
        return kwargs

    def get_resource_hints(self) -> Dict[str, Any]:
        handler = self._plugin_info()["handler"]
        hints: Dict[str, Any] = {}
        if handler.get("min_ram_mb"):
            hints["min_ram"] = f"{handler['min_ram_mb']}MB"
        if handler.get("accelerator"):
            hints["accelerator"] = handler["accelerator"]
        return hints

    def share_model_across_processes(self) -> bool:
        # One server per machine: the model is loaded once, like Beam's vLLM handler.
        return True

    # --- the model: a running server ---

    def load_model(self) -> RuninferServer:
        # Beam has already batched (BatchElements): the server runs each request's rows
        # at once instead of waiting for company that will not come.
        server = RuninferServer(self._binary, self._plugin_dir, ["--max-batch-duration-ms", "0", *self._serve_args])
        self._check_plugin(server)
        if self._model_uri:
            # Beam calls load_model again after update_model_path: the server fetches
            # the object itself (cached, pinned by its store's ETag), no worker copy.
            server.load_model_path(self._plugin, self._model_uri)
        return server

    def _check_plugin(self, server: RuninferServer) -> None:
        status, _, body = server.call("GET", f"/v2/models/{self._plugin}/ready")
        if status != 200:
            raise RuninferError(f"plugin '{self._plugin}' is not live in {self._plugin_dir}: {body.decode(errors='replace')}")

    def run_inference(
        self,
        batch: Sequence[Any],
        model: RuninferServer,
        inference_args: Optional[Dict[str, Any]] = None,
    ) -> Iterable[PredictionResult]:
        self.validate_inference_args(inference_args)
        inferences, model_id = model.infer(self._plugin, batch, timeout_us=int(self._timeout_s * 1e6))
        return [PredictionResult(example, inference, model_id) for example, inference in zip(batch, inferences)]

    def validate_inference_args(self, inference_args: Optional[Dict[str, Any]]) -> None:
        # Requests of many clients share a batch in the server, so there is no per-batch
        # place for them; `runinfer run --arg` sets them for a whole job.
        if inference_args:
            raise ValueError(
                f"RuninferModelHandler takes no inference_args (got {sorted(inference_args)}); "
                "runinfer's handler args go in the plugin's plugin.toml [args]"
            )

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        total = 0
        for example in batch:
            if isinstance(example, Mapping):
                total += self.get_num_bytes(list(example.values()))
                continue
            nbytes = getattr(example, "nbytes", None)
            if nbytes is not None:
                total += int(nbytes)
            elif isinstance(example, (bytes, str)):
                total += len(example)
            else:
                total += len(json.dumps(example, default=str))
        return total

    # --- model refresh ---

    def update_model_path(self, model_path: Optional[str] = None) -> None:
        """Deploys `model_path` as the plugin's model through runinfer's model refresh:
        a URI (`s3://`, `gs://`, `az://`, `https://`…) goes to the server, which fetches
        it into its model cache (credentials from the server's environment) when Beam
        loads the model next (`load_model`); a local file is copied (write, then
        rename) into the directory of the plugin's `[models]` file pattern, where the
        server's watcher finds it as the newest match. Either way the new model is
        swapped in only if it loads. A local file needs the plugin's model to be a file
        pattern (for example `models/iris-*.onnx`)."""
        if not model_path:
            return
        if "://" in model_path:
            self._model_uri = model_path
            self._pending_model_id = model_path
            return
        manifest = _read_manifest(Path(self._plugin_dir) / self._plugin / "plugin.toml")
        patterns = [p for p in manifest.get("models", {}).values() if any(c in p for c in "*?[")]
        if len(patterns) != 1:
            raise RuninferError(
                f"plugin '{self._plugin}' needs exactly one [models] entry that is a file pattern "
                f"(like \"models/model-*.onnx\") for update_model_path; it has {manifest.get('models')}"
            )
        pattern = Path(self._plugin_dir) / self._plugin / patterns[0]
        stem, _, suffix = pattern.name.partition("*")
        if not stem and not suffix or any(c in stem + suffix for c in "?[*"):
            raise RuninferError(f"update_model_path supports patterns with one `*`, not {patterns[0]}")
        name = f"{stem}{time.strftime('%Y%m%d%H%M%S')}-{Path(model_path).stem}{suffix}"
        target = pattern.parent / name
        tmp = pattern.parent / f".{name}.tmp"
        shutil.copyfile(model_path, tmp)
        os.replace(tmp, target)
        self._pending_model_id = str(target.relative_to(Path(self._plugin_dir) / self._plugin))

    def wait_for_model(self, server: RuninferServer, timeout_s: float = 60.0) -> str:
        """Waits until the server serves the model staged by `update_model_path`;
        returns its id."""
        deadline = time.monotonic() + timeout_s
        while True:
            model_id = server.model_metadata(self._plugin)["parameters"]["model_id"]
            if self._pending_model_id is None or model_id.startswith(self._pending_model_id + "@"):
                return model_id
            if time.monotonic() > deadline:
                raise RuninferError(f"the server still serves {model_id}, not {self._pending_model_id}")
            time.sleep(0.05)


def _read_manifest(path: Path) -> Dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    with open(path, "rb") as f:
        return tomllib.load(f)
