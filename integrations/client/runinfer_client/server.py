"""A local `runinfer serve` process and an Open Inference Protocol v2 client for it."""

import http.client
import json
import logging
import re
import struct
import subprocess
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

LOG = logging.getLogger("runinfer_client")

# OIP datatype <-> numpy dtype (BYTES is handled apart).
DATATYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP32": np.float32,
    "FP64": np.float64,
}


class RuninferError(RuntimeError):
    """The server refused a request or could not be started."""


class RuninferServer:
    """One `runinfer serve` on a free loopback port (the server picks it: `--port 0`),
    health-checked, and started again if it dies. Safe to share between threads; Beam
    shares one per worker machine across processes (`share_model_across_processes`)."""

    def __init__(
        self,
        binary: str,
        plugin_dir: str,
        extra_args: Sequence[str] = (),
        start_timeout_s: float = 120.0,
        env: Optional[Dict[str, str]] = None,
    ):
        # The server holds our stdin pipe and stops when it closes, so it never outlives
        # this process (however it ends).
        self._command = [binary, "serve", "--plugins", plugin_dir, "--address", "127.0.0.1", "--port", "0",
                         "--exit-on-stdin-eof", *extra_args]
        self._start_timeout_s = start_timeout_s
        self._env = env
        self._lock = threading.Lock()
        self._local = threading.local()
        self._process: subprocess.Popen
        self._address: Optional[str] = None
        self._metadata: Dict[str, Dict[str, Any]] = {}
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        LOG.info("starting %s", " ".join(self._command))
        process = subprocess.Popen(
            self._command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=self._env
        )
        log: List[str] = []
        address = None
        for line in process.stderr:
            log.append(line)
            match = re.search(r" on http://(\S+)$", line.strip())
            if match:
                address = match.group(1)
                break
        if address is None:
            process.wait()
            raise RuninferError(f"runinfer serve exited with {process.returncode}:\n{''.join(log)}")
        # Keep reading its log so the pipe never fills.
        threading.Thread(target=_forward_log, args=(process.stderr,), daemon=True).start()
        self._process, self._address = process, address
        self._local = threading.local()
        deadline = time.monotonic() + self._start_timeout_s
        while time.monotonic() < deadline:
            try:
                if self._request("GET", "/v2/health/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuninferError(f"runinfer serve at {address} did not become ready in {self._start_timeout_s} s")

    def ensure_running(self, grace_s: float = 0.0) -> str:
        """The server's address; starts a new server if the process died (waiting up to
        `grace_s` for a failing one to end)."""
        with self._lock:
            if grace_s and self._process.poll() is None:
                try:
                    self._process.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    pass  # alive: the connection failed for another reason
            if self._process.poll() is not None:
                LOG.warning("runinfer serve is gone (exit %s); starting it again", self._process.returncode)
                self.restarts += 1
                self._start()
            return self._address

    def address(self) -> str:
        return self.ensure_running()

    def restart_count(self) -> int:
        return self.restarts

    def pid(self) -> int:
        return self._process.pid

    def stop(self) -> None:
        """Stops the server after the requests in flight."""
        with self._lock:
            if self._process.poll() is None:
                self._process.stdin.close()
                self._process.wait(timeout=60)

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            host, port = self._address.rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=300)
            self._local.conn = conn
        return conn

    def _request(self, method: str, path: str, body: bytes = b"", headers: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, str], bytes]:
        conn = self._connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self._local.conn = None
            raise

    def call(self, method: str, path: str, body: bytes = b"", headers: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, str], bytes]:
        """One request; if the connection fails, the server is checked (and started
        again if it died) and the request is sent once more."""
        self.ensure_running()
        try:
            return self._request(method, path, body, headers)
        except (OSError, http.client.HTTPException):
            self.ensure_running(grace_s=2.0)
            return self._request(method, path, body, headers)

    def get_json(self, path: str) -> Any:
        status, _, body = self.call("GET", path)
        if status != 200:
            raise RuninferError(f"GET {path}: {status} {_error(body)}")
        return json.loads(body)

    def load_model_path(self, model: str, model_path: str, name: Optional[str] = None) -> str:
        """Serves the plugin `model`'s model `name` (its only one when None) from
        `model_path` — a file of the plugin or a remote object (`s3://`, `gs://`,
        `https://`…) that the server fetches itself — through model refresh; the old
        model serves until the new one loaded. Returns the model id now serving."""
        parameters = {"model_path": model_path}
        if name is not None:
            parameters["model"] = name
        status, _, body = self.call(
            "POST", f"/v2/repository/models/{model}/load",
            json.dumps({"parameters": parameters}).encode(), {"Content-Type": "application/json"},
        )
        if status != 200:
            raise RuninferError(f"load {model_path} for {model}: {status} {_error(body)}")
        self._metadata.pop(model, None)
        return json.loads(body)["model_id"]

    def model_metadata(self, model: str) -> Dict[str, Any]:
        return self.get_json(f"/v2/models/{model}")

    def _declared(self, model: str) -> Dict[str, Any]:
        """The model's metadata, asked once (not once a batch); forgotten when a
        request fails, so a plugin replaced with another signature is asked again."""
        if model not in self._metadata:
            self._metadata[model] = self.model_metadata(model)
        return self._metadata[model]

    def infer(self, model: str, rows: Sequence[Any], timeout_us: Optional[int] = None) -> Tuple[List[Any], Optional[str]]:
        """Sends rows (binary tensor data extension) as the model's metadata declares
        them and returns one inference per row and the id of the model that made them.
        A model of named inputs takes each row as a mapping of name to array; rows whose
        arrays differ in shape (ragged sequences) go in one request per shape, since a
        tensor input has one shape for all its rows, and come back in row order."""
        meta = self._declared(model)
        groups: Dict[Tuple, List[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault(_shapes(meta["inputs"], row), []).append(i)
        inferences: List[Any] = [None] * len(rows)
        model_id = None
        for indices in groups.values():
            got, model_id = self._infer_rows(model, meta, [rows[i] for i in indices], timeout_us)
            for i, inference in zip(indices, got):
                inferences[i] = inference
        return inferences, model_id

    def infer_columns(
        self, model: str, columns: Sequence[Any], timeout_us: Optional[int] = None
    ) -> Tuple[Dict[str, Any], Optional[str]]:
        """Sends one batch given as columns, one per declared input in the order of the
        model's metadata (a numpy array with the batch first, or a list of strings,
        bytes or JSON values for BYTES), as one request; returns the declared outputs
        as columns (arrays with the batch first; lists for BYTES, JSON parsed) and the
        id of the model that made them. What Spark and Ray hand over and want back."""
        meta = self._declared(model)
        if len(columns) != len(meta["inputs"]):
            names = [i["name"] for i in meta["inputs"]]
            raise RuninferError(f"model '{model}' takes {len(names)} inputs {names}, got {len(columns)} columns")
        rows = len(columns[0]) if len(columns) else 0
        outputs, model_id = self._send(model, meta, list(columns), rows, timeout_us)
        content = {o["name"]: o.get("parameters", {}).get("content_type") for o in meta["outputs"]}
        for name, values in outputs.items():
            if content.get(name) == "json":
                outputs[name] = [json.loads(v) for v in values]
        return outputs, model_id

    def _infer_rows(self, model: str, meta: Dict[str, Any], rows: Sequence[Any], timeout_us: Optional[int]) -> Tuple[List[Any], Optional[str]]:
        named = len(meta["inputs"]) > 1
        columns = [[_field(row, d["name"]) if named else row for row in rows] for d in meta["inputs"]]
        outputs, model_id = self._send(model, meta, columns, len(rows), timeout_us)
        return _split_rows(outputs, len(rows), meta["outputs"]), model_id

    def _send(
        self, model: str, meta: Dict[str, Any], columns: List[Any], rows: int, timeout_us: Optional[int]
    ) -> Tuple[Dict[str, Any], Optional[str]]:
        """One binary request with a column per declared input; the output columns."""
        headers, data = [], bytearray()
        for declared, column in zip(meta["inputs"], columns):
            header, raw = _encode_input(declared["name"], declared["datatype"], column)
            headers.append(header)
            data += raw
        parameters: Dict[str, Any] = {"binary_data_output": True}
        if timeout_us is not None:
            parameters["timeout"] = timeout_us
        request = json.dumps({"inputs": headers, "parameters": parameters}).encode()
        status, response_headers, body = self.call(
            "POST",
            f"/v2/models/{model}/infer",
            request + bytes(data),
            {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(request))},
        )
        if status != 200:
            self._metadata.pop(model, None)
            raise RuninferError(f"runinfer model '{model}': {status} {_error(body)}")
        return _decode_columns(response_headers, body, rows)


def _field(row: Any, name: str) -> Any:
    try:
        return row[name]
    except (KeyError, TypeError, IndexError):
        raise RuninferError(f"this model takes named inputs: each example must map {name!r} to its value, got {type(row).__name__}") from None


def _shapes(inputs: Sequence[Dict[str, Any]], row: Any) -> Tuple:
    """The shapes of a row's tensors: rows of equal shapes go in one request."""
    if len(inputs) > 1:
        return tuple(np.shape(_field(row, i["name"])) if i["datatype"] != "BYTES" else () for i in inputs)
    return (np.shape(row),) if inputs[0]["datatype"] != "BYTES" else ()


def _forward_log(stream) -> None:
    for line in stream:
        LOG.info("runinfer: %s", line.rstrip())


def _error(body: bytes) -> str:
    try:
        return json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return body[:500].decode(errors="replace")


def _encode_input(name: str, datatype: str, rows: Sequence[Any]) -> Tuple[Dict[str, Any], bytes]:
    if datatype == "BYTES":
        data = bytearray()
        for row in rows:
            if isinstance(row, bytes):
                element = row
            elif isinstance(row, str):
                element = row.encode()
            else:
                # A JSON handler's example: any JSON value.
                element = json.dumps(row, default=_json_default).encode()
            data += struct.pack("<I", len(element)) + element
        return {"name": name, "datatype": "BYTES", "shape": [len(rows)], "parameters": {"binary_data_size": len(data)}}, bytes(data)
    batch = rows if isinstance(rows, np.ndarray) else np.stack([np.asarray(r) for r in rows])
    array = np.ascontiguousarray(batch, dtype=DATATYPES[datatype])
    data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "parameters": {"binary_data_size": len(data)}}, data


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot send {type(value).__name__} as JSON")


def _decode_columns(headers: Dict[str, str], body: bytes, rows: int) -> Tuple[Dict[str, Any], Optional[str]]:
    """The output columns of a response (arrays; lists of strings for BYTES) and its
    model id."""
    lowered = {k.lower(): v for k, v in headers.items()}
    length = int(lowered.get("inference-header-content-length", len(body)))
    response = json.loads(body[:length])
    binary = memoryview(body)[length:]
    columns: Dict[str, Any] = {}
    for output in response["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is None:
            raw = output["data"]
            if output["datatype"] == "BYTES":
                values: Any = list(raw)
            else:
                values = np.asarray(raw, dtype=DATATYPES[output["datatype"]]).reshape(output["shape"])
        else:
            chunk, binary = binary[:size], binary[size:]
            if output["datatype"] == "BYTES":
                values, offset = [], 0
                while offset < len(chunk):
                    (n,) = struct.unpack_from("<I", chunk, offset)
                    values.append(bytes(chunk[offset + 4 : offset + 4 + n]).decode())
                    offset += 4 + n
            else:
                values = np.frombuffer(chunk, dtype=np.dtype(DATATYPES[output["datatype"]]).newbyteorder("<")).reshape(output["shape"])
        columns[output["name"]] = values
    if any(len(v) != rows for v in columns.values()):
        raise RuninferError(f"the server answered {[len(v) for v in columns.values()]} rows for {rows}")
    return columns, response.get("parameters", {}).get("model_id")


def _split_rows(columns: Dict[str, Any], rows: int, declared: Sequence[Dict[str, Any]]) -> List[Any]:
    """One inference per row: the value of the one unnamed output, or a dict by name.
    The metadata says what a BYTES output holds: JSON text is parsed, strings stay."""
    content = {o["name"]: o.get("parameters", {}).get("content_type") for o in declared}
    inferences = []
    for i in range(rows):
        if list(columns) == ["output"] and len(declared) == 1:
            inferences.append(_inference(columns["output"][i], content["output"]))
        else:
            inferences.append({name: _inference(values[i], content.get(name)) for name, values in columns.items()})
    return inferences


def _inference(value: Any, content_type: Optional[str]) -> Any:
    if content_type == "json":
        return json.loads(value)
    return value
