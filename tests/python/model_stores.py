"""Models from object storage and HTTP against real servers: moto's S3 server (a
real HTTP S3 API) and Python's HTTP file server, with `runinfer serve` as a process
and tritonclient as the client.

Usage: model_stores.py REPO_ROOT RUNINFER_BINARY
"""

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import json
from pathlib import Path

import boto3
import numpy as np
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families

from checks import check, check_iris, check_mlp, golden

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_REGION": "us-east-1",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what, proc):
    deadline = time.monotonic() + 60
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        check(proc.poll() is None, f"{what} exited")
        check(time.monotonic() < deadline, f"{what} never listened")
        time.sleep(0.05)


def start(args, port, what):
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, what, proc)
    return proc


def stop(proc):
    proc.kill()
    proc.wait()


class Serve:
    """`runinfer serve` on free ports, polling remote models every second."""

    def __init__(self, binary, plugins, cache, env, allow):
        self.proc = subprocess.Popen(
            [binary, "serve", "--port", "0", "--plugins", plugins, "--model-cache-dir", cache,
             "--model-poll-secs", "1", "--settle-ms", "100", "--model-url-allow", allow],
            stderr=subprocess.PIPE, text=True, env=env)
        self.log = []
        while True:
            line = self.proc.stderr.readline()
            check(line, "runinfer serve exited before listening:\n" + "".join(self.log))
            self.log.append(line)
            if " on http://" in line:
                self.address = line.strip().rsplit(" on http://", 1)[1]
                break
        self.drain = threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True)
        self.drain.start()
        self.client = httpclient.InferenceServerClient(self.address)

    def post(self, path, body=None):
        request = urllib.request.Request(f"http://{self.address}{path}", data=json.dumps(body or {}).encode(), method="POST")
        with urllib.request.urlopen(request) as response:
            return json.loads(response.read())

    def load_model_path(self, plugin, path):
        """Repository load with a model path (Beam's update_model_path): the status and
        the answer."""
        try:
            return 200, self.post(f"/v2/repository/models/{plugin}/load", {"parameters": {"model_path": path}})
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def index(self):
        return {m["name"]: m for m in self.post("/v2/repository/index")}

    def metrics(self):
        with urllib.request.urlopen(f"http://{self.address}/metrics") as response:
            text = response.read().decode()
        return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}

    def model_id(self, name):
        return self.client.get_model_metadata(name)["parameters"]["model_id"]

    def wait(self, what, condition, timeout=60):
        deadline = time.monotonic() + timeout
        while not condition():
            check(time.monotonic() < deadline, f"never {what}; server log:\n" + "".join(self.log))
            time.sleep(0.1)

    def infer_mlp(self, rows, what):
        examples = np.array([g["example"] for g in rows], dtype=np.float32)
        inp = httpclient.InferInput("input", list(examples.shape), "FP32")
        inp.set_data_from_numpy(examples)
        result = self.client.infer("mlp", [inp])
        check_mlp(result.as_numpy("logits"), result.as_numpy("hidden"), rows, what)

    def infer_iris(self, rows, what):
        features = np.array([g["example"] for g in rows], dtype=np.float32)
        inp = httpclient.InferInput("input", list(features.shape), "FP32")
        inp.set_data_from_numpy(features)
        result = self.client.infer("iris", [inp])
        labels = [label.decode() for label in result.as_numpy("label")]
        check_iris(labels, result.as_numpy("probabilities"), rows, what)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        check(self.proc.wait(timeout=60) == 0, "runinfer serve did not stop cleanly:\n" + "".join(self.log))


def plugin(plugins, name, source, component, model_line):
    directory = plugins / name
    directory.mkdir(parents=True)
    shutil.copy(source / component, directory / component)
    manifest = (source / "plugin.toml").read_text()
    lines = [model_line if line.startswith(("model =", "iris =")) else line for line in manifest.splitlines()]
    lines = [f'name = "{name}"' if line.startswith("name =") else line for line in lines]
    (directory / "plugin.toml").write_text("\n".join(lines) + "\n")


def main():
    root, binary = Path(sys.argv[1]), sys.argv[2]
    work = Path(tempfile.mkdtemp(prefix="runinfer-stores-"))
    plugins, cache, files = work / "plugins", work / "cache", work / "files"
    files.mkdir()
    mlp_models = root / "plugins" / "onnx-tensor" / "models"
    iris_model = root / "plugins" / "iris" / "models" / "iris.onnx"
    shutil.copy(iris_model, files / "iris.onnx")
    iris_sha = hashlib.sha256(iris_model.read_bytes()).hexdigest()
    iris_rows, mlp_rows, mlp2_rows = (golden(root, n) for n in ("iris.jsonl", "tiny_mlp.jsonl", "tiny_mlp_v2.jsonl"))

    s3_port, http_port = free_port(), free_port()
    s3 = start([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)], s3_port, "moto")
    http = start([sys.executable, "-m", "http.server", str(http_port), "--bind", "127.0.0.1", "--directory", str(files)],
                 http_port, "http.server")
    endpoint = f"http://127.0.0.1:{s3_port}"
    bucket = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")
    bucket.create_bucket(Bucket="models")
    bucket.put_object(Bucket="models", Key="mlp/mlp-1.onnx", Body=(mlp_models / "tiny_mlp.onnx").read_bytes())

    onnx_tensor, iris = root / "plugins" / "onnx-tensor", root / "plugins" / "iris"
    plugin(plugins, "mlp", onnx_tensor, "onnx-tensor.wasm", 'model = "s3://models/mlp/mlp-*.onnx"')
    iris_line = f'iris = {{ path = "http://127.0.0.1:{http_port}/iris.onnx", sha256 = "{iris_sha}" }}'
    plugin(plugins, "iris", iris, "iris.wasm", iris_line)
    plugin(plugins, "bad-pin", iris, "iris.wasm",
           f'iris = {{ path = "http://127.0.0.1:{http_port}/iris.onnx", sha256 = "{"0" * 64}" }}')
    # The variable boto3 and the AWS CLI read; an http:// endpoint needs nothing more.
    env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, **CREDENTIALS)
    # Each plugin may fetch from its own S3 prefix, and from the HTTP server.
    allow = f"s3://models/{{plugin}}/,http://127.0.0.1:{http_port}/"

    try:
        # Start: the S3 pattern's newest object and the pinned HTTP file are
        # downloaded; the wrong pin is refused and fails that plugin alone.
        serve = Serve(binary, str(plugins), str(cache), env, allow)
        index = serve.index()
        check(index["mlp"]["state"] == "READY" and index["iris"]["state"] == "READY", f"{index}")
        check(index["bad-pin"]["state"] == "UNAVAILABLE" and f"not the pinned {'0' * 64}: refused" in index["bad-pin"]["reason"],
              f"{index['bad-pin']}")
        check(serve.model_id("mlp").startswith("s3://models/mlp/mlp-1.onnx@"), serve.model_id("mlp"))
        check(serve.model_id("iris").startswith(f"http://127.0.0.1:{http_port}/iris.onnx@"), serve.model_id("iris"))
        serve.infer_mlp(mlp_rows, "mlp from S3")
        serve.infer_iris(iris_rows, "iris over HTTP")
        values = serve.metrics()
        check(values["runinfer_model_downloads_total"] == 2, f"downloads {values['runinfer_model_downloads_total']}")
        check(values["runinfer_model_download_bytes_total"] == (mlp_models / "tiny_mlp.onnx").stat().st_size
              + iris_model.stat().st_size, "download bytes")
        check(values["runinfer_model_store_errors_total"] >= 1, "the refused pin is counted")
        blobs = sorted(p.name for p in (cache / "blobs").iterdir())
        check(iris_sha in blobs and len(blobs) == 2 and not list((cache / "tmp").iterdir()), f"cache {blobs}")
        print("start: S3 pattern and pinned HTTP models downloaded and served; a wrong pin fails its plugin alone")

        # A new object that matches the pattern is picked up by the poll and swapped in.
        bucket.put_object(Bucket="models", Key="mlp/mlp-2.onnx", Body=(mlp_models / "tiny_mlp_v2.onnx").read_bytes())
        serve.wait("refreshed to mlp-2", lambda: serve.model_id("mlp").startswith("s3://models/mlp/mlp-2.onnx@"))
        serve.infer_mlp(mlp2_rows, "mlp after refresh")
        print("refresh: a new S3 object is served, with the new model's outputs")

        # A manifest pinning other bytes is refused; the version live keeps serving.
        # The wrong pin is a blob the cache holds (mlp's): a pin must not reach it.
        manifest = plugins / "iris" / "plugin.toml"
        good = manifest.read_text()
        wrong = hashlib.sha256((mlp_models / "tiny_mlp.onnx").read_bytes()).hexdigest()
        manifest.write_text(good.replace(iris_sha, wrong))
        serve.wait("refused the new pin", lambda: "not the pinned" in serve.index()["iris"]["reason"])
        check(serve.index()["iris"]["state"] == "READY", "the old iris keeps serving")
        serve.infer_iris(iris_rows, "iris after a refused pin")
        manifest.write_text(good)
        serve.wait("iris back", lambda: serve.index()["iris"]["reason"] == "")
        print("digest: a download whose SHA-256 differs from the pin is refused; the old model keeps serving")

        # update_model_path through the repository: another object is fetched and
        # swapped in; one outside the plugin's prefix or a missing one is refused and
        # the model serving stays; back to the pattern, the newest object again.
        bucket.put_object(Bucket="models", Key="mlp/archive/v1.onnx", Body=(mlp_models / "tiny_mlp.onnx").read_bytes())
        status, answer = serve.load_model_path("mlp", "s3://models/mlp/archive/v1.onnx")
        check(status == 200 and answer["model_id"].startswith("s3://models/mlp/archive/v1.onnx@"), f"{status} {answer}")
        check(serve.model_id("mlp") == answer["model_id"], serve.model_id("mlp"))
        serve.infer_mlp(mlp_rows, "mlp after update_model_path")
        for path, reason in [
            ("s3://models/iris/v1.onnx", "outside the model locations this host allows plugin `mlp`"),
            ("s3://models/mlp/missing.onnx", "cannot fetch s3://models/mlp/missing.onnx"),
            ("../iris/models/iris.onnx", "expected a path inside the plugin directory"),
        ]:
            status, answer = serve.load_model_path("mlp", path)
            check(status == 400 and reason in answer["error"], f"{path}: {status} {answer}")
            serve.infer_mlp(mlp_rows, f"mlp after a refused {path}")
        status, answer = serve.load_model_path("mlp", "s3://models/mlp/mlp-*.onnx")
        check(status == 200 and answer["model_id"].startswith("s3://models/mlp/mlp-2.onnx@"), f"{status} {answer}")
        print("update_model_path: an S3 object is fetched and served; paths outside the plugin's prefix refused")

        # The store goes away: polls fail and are counted, the current model serves on.
        before = serve.metrics()["runinfer_model_store_errors_total"]
        stop(s3)
        serve.wait("counted store failures", lambda: serve.metrics()["runinfer_model_store_errors_total"] >= before + 2)
        check(serve.model_id("mlp").startswith("s3://models/mlp/mlp-2.onnx@"), serve.model_id("mlp"))
        serve.infer_mlp(mlp2_rows, "mlp with the store down")
        serve.stop()
        print("store down: failures counted, the current model keeps serving")

        # A restart with both stores down serves from the cache; a model never
        # fetched fails its plugin alone with the reason.
        stop(http)
        plugin(plugins, "uncached", onnx_tensor, "onnx-tensor.wasm", 'model = "s3://models/uncached/m.onnx"')
        serve = Serve(binary, str(plugins), str(cache), env, allow)
        index = serve.index()
        check(index["mlp"]["state"] == "READY" and index["iris"]["state"] == "READY", f"{index}")
        check(index["bad-pin"]["state"] == "UNAVAILABLE" and "not the pinned" in index["bad-pin"]["reason"],
              f"the cached copy of bad-pin's URL is not its pinned bytes either: {index['bad-pin']}")
        check(index["uncached"]["state"] == "UNAVAILABLE"
              and "cannot fetch s3://models/uncached/m.onnx" in index["uncached"]["reason"], f"{index['uncached']}")
        check(serve.model_id("mlp").startswith("s3://models/mlp/mlp-2.onnx@"), serve.model_id("mlp"))
        serve.infer_mlp(mlp2_rows, "mlp from the cache")
        serve.infer_iris(iris_rows, "iris from the cache")
        values = serve.metrics()
        check(values["runinfer_model_downloads_total"] == 0 and values["runinfer_model_cache_hits_total"] >= 2, f"{values}")
        serve.stop()
        print("restart with the stores down: models served from the cache; an uncached one fails alone")
    finally:
        for proc in (s3, http):
            if proc.poll() is None:
                stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    print("ok")


if __name__ == "__main__":
    main()
