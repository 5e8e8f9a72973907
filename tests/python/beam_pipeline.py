"""Real Beam pipelines on Beam's local runner with RuninferModelHandler: unkeyed and
keyed iris, a text handler, a model of three named inputs fed dicts of arrays (like
Beam's keyed-tensor handlers) with ragged sequence lengths, a server that dies and is
started again, and model refresh through update_model_path. Exits non-zero on the
first mismatch.

    usage: python beam_pipeline.py REPO_ROOT RUNINFER_BINARY MINILM3.onnx EXAMPLES.jsonl REFERENCE.jsonl
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that

ROOT = Path(sys.argv[1]).resolve()
BINARY = sys.argv[2]
sys.path.insert(0, str(ROOT / "integrations" / "beam"))
sys.path.insert(0, str(ROOT / "integrations" / "client"))
from runinfer_beam import RuninferModelHandler  # noqa: E402

TOLERANCE = 1e-5
OPTIONS = PipelineOptions(["--runner=DirectRunner"])


def golden(name):
    return [json.loads(line) for line in (ROOT / "tests" / "golden" / name).read_text().splitlines() if line.strip()]


def check_iris(results, iris):
    by_example = {tuple(np.asarray(g["example"], dtype=np.float32).tolist()): g for g in iris}
    if len(results) != len(iris):
        raise AssertionError(f"{len(results)} predictions for {len(iris)} examples")
    for r in results:
        if not isinstance(r, PredictionResult):
            raise AssertionError(f"not a PredictionResult: {r!r}")
        g = by_example[tuple(np.asarray(r.example).tolist())]
        if r.inference["label"] != g["label"]:
            raise AssertionError(f"{r.example}: {r.inference} vs {g}")
        for got, p in zip(r.inference["probabilities"], g["probabilities"], strict=True):
            if abs(got - p) > TOLERANCE:
                raise AssertionError(f"{r.example}: {r.inference} vs {g['probabilities']}")
        if not r.model_id.startswith("models/iris.onnx@"):
            raise AssertionError(f"model id {r.model_id}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port):
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        check(time.monotonic() < deadline, f"nothing listens on {port}")
        time.sleep(0.05)


def check(condition, message):
    """Fails the script whatever the interpreter's flags (a bare `assert` vanishes under
    PYTHONOPTIMIZE while the script would still print "ok")."""
    if not condition:
        raise SystemExit(f"FAILED: {message}")


def handler(plugin, **kw):
    return RuninferModelHandler(plugin, plugin_dir=str(ROOT / "plugins"), binary=BINARY, **kw)


def named_inputs():
    """MiniLM with BERT's three inputs through onnx-tensor: dict examples of several
    sequence lengths in one Beam batch, every output against onnxruntime's."""
    model, examples_path, reference_path = sys.argv[3:6]
    lines = [json.loads(line) for line in open(examples_path)]
    examples = [{k: np.asarray(v, dtype=np.int64) for k, v in line.get("example", line).items()} for line in lines]
    reference = [json.loads(line) for line in open(reference_path)]
    with tempfile.TemporaryDirectory() as tmp:
        plugin = Path(tmp) / "minilm"
        plugin.mkdir()
        shutil.copy(ROOT / "plugins" / "onnx-tensor" / "onnx-tensor.wasm", plugin)
        shutil.copy(model, plugin / "net.onnx")
        (plugin / "plugin.toml").write_text('name = "minilm"\ncomponent = "onnx-tensor.wasm"\n[models]\nmodel = "net.onnx"\n')
        h = RuninferModelHandler("minilm", plugin_dir=tmp, binary=BINARY, max_batch_size=8)

        def check_minilm(pairs):
            check(sorted(k for k, _ in pairs) == list(range(len(examples))), "every key comes back once")
            for key, r in pairs:
                want, mask = reference[key], examples[key]["attention_mask"] == 1
                emb = np.asarray(r.inference["sentence_embedding"])
                check(np.abs(emb - want["sentence_embedding"]).max() <= TOLERANCE, f"{key}: embedding")
                diff = np.abs(np.asarray(r.inference["last_hidden_state"]) - want["last_hidden_state"]).max(axis=-1)
                check(diff[mask].max() <= TOLERANCE and (mask.all() or diff[~mask].max() <= 1e-4), f"{key}: states {diff.max()}")

        with beam.Pipeline(options=OPTIONS) as p:
            keyed = p | beam.Create(list(enumerate(examples))) | RunInference(KeyedModelHandler(h))
            assert_that(keyed, check_minilm)
    print(f"named inputs: {len(examples)} dicts of three int64 arrays, ragged, match onnxruntime")


def main():
    iris = golden("iris.jsonl")
    examples = [np.asarray(g["example"], dtype=np.float32) for g in iris]

    # Unkeyed.
    h = handler("iris")
    check(h.get_metrics_namespace() == "iris", h.get_metrics_namespace())
    kwargs = h.batch_elements_kwargs()
    check(kwargs["max_batch_size"] == 64 and kwargs["min_batch_size"] == 1, kwargs)
    with beam.Pipeline(options=OPTIONS) as p:
        results = p | beam.Create(examples) | RunInference(h)
        assert_that(results, lambda rs: check_iris(rs, iris))
    print(f"unkeyed: {len(iris)} iris predictions match the golden file")

    # Keyed (Beam's KeyedModelHandler): keys come back with their predictions.
    def check_keyed(pairs):
        if sorted(k for k, _ in pairs) != list(range(len(iris))):
            raise AssertionError("every key comes back once")
        for key, r in pairs:
            if r.inference["label"] != iris[key]["label"] or not np.array_equal(r.example, examples[key]):
                raise AssertionError(f"key {key}: {r}")

    with beam.Pipeline(options=OPTIONS) as p:
        keyed = p | beam.Create(list(enumerate(examples))) | RunInference(KeyedModelHandler(handler("iris", max_batch_size=16)))
        assert_that(keyed, check_keyed)
    print(f"keyed: {len(iris)} (key, prediction) pairs")

    # A text handler: strings in, the handler's JSON out.
    texts = ["great and fast", "bad and slow", "fine"]

    def check_text(rs):
        got = {r.example: r.inference["label"] for r in rs}
        if got["great and fast"] != "positive" or got["bad and slow"] != "negative" or len(got) != 3:
            raise AssertionError(f"text-stats: {got}")

    with beam.Pipeline(options=OPTIONS) as p:
        assert_that(p | beam.Create(texts) | RunInference(handler("text-stats")), check_text)
    print("text-stats: strings through BYTES")

    named_inputs()

    # A server that dies is started again on the next batch.
    server = handler("iris").load_model()
    first = server.address()
    os.kill(server.pid(), 9)
    inferences, _ = server.infer("iris", examples[:3])
    check([i["label"] for i in inferences] == [g["label"] for g in iris[:3]], inferences)
    check(server.restart_count() == 1, server.restart_count())
    print(f"restart: killed the server at {first}; the next batch started one at {server.address()}")
    server.stop()

    # update_model_path: a new file for the plugin's [models] pattern is swapped in.
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory(prefix="runinfer-cache-") as cache:
        plugin = Path(tmp) / "mlp"
        (plugin / "models").mkdir(parents=True)
        source = ROOT / "plugins" / "onnx-tensor"
        shutil.copy(source / "onnx-tensor.wasm", plugin)
        shutil.copy(source / "models" / "tiny_mlp.onnx", plugin / "models" / "mlp-1.onnx")
        (plugin / "plugin.toml").write_text('name = "mlp"\ncomponent = "onnx-tensor.wasm"\n[models]\nmodel = "models/mlp-*.onnx"\n')
        h = RuninferModelHandler("mlp", plugin_dir=tmp, binary=BINARY,
                                 serve_args=["--settle-ms", "100", "--model-cache-dir", cache])
        server = h.load_model()
        v1, v2 = golden("tiny_mlp.jsonl")[:4], golden("tiny_mlp_v2.jsonl")[:4]
        rows = [np.asarray(g["example"], dtype=np.float32) for g in v1]
        results = list(h.run_inference(rows, server))
        check(len(results) == len(v1), f"{len(results)} results")
        check(results[0].model_id.startswith("models/mlp-1.onnx@"), results[0].model_id)
        check(np.allclose([r.inference["logits"] for r in results], [g["logits"] for g in v1], atol=TOLERANCE), "v1 logits")
        h.update_model_path(str(source / "models" / "tiny_mlp_v2.onnx"))
        model_id = h.wait_for_model(server)
        results = list(h.run_inference([np.asarray(g["example"], dtype=np.float32) for g in v2], server))
        check(results[0].model_id == model_id, (results[0].model_id, model_id))
        check(len(results) == len(v2), f"{len(results)} results")
        check(np.allclose([r.inference["logits"] for r in results], [g["logits"] for g in v2], atol=TOLERANCE), "v2 logits")
        print(f"update_model_path: now serving {model_id}, predictions match tiny_mlp_v2")

        # A URI goes to the server, which fetches the object itself (here from an
        # HTTP file server) when Beam loads the model again.
        port = free_port()
        files = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(source / "models")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_listening(port)
            uri = f"http://127.0.0.1:{port}/tiny_mlp.onnx"
            h.update_model_path(uri)
            server = h.load_model()
            model_id = h.wait_for_model(server)
            check(model_id.startswith(uri + "@"), model_id)
            results = list(h.run_inference(rows, server))
            check(results[0].model_id == model_id, (results[0].model_id, model_id))
            check(np.allclose([r.inference["logits"] for r in results], [g["logits"] for g in v1], atol=TOLERANCE),
                  "logits of the model at the URI")
        finally:
            files.kill()
            files.wait()
        server.stop()
    print(f"update_model_path with a URI: now serving {model_id}, predictions match tiny_mlp")
    print("ok")


if __name__ == "__main__":
    main()
