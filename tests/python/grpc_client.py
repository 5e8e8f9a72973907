"""Drives a running `runinfer serve` over gRPC with Triton's `tritonclient[grpc]`, as a
Triton user would: health, server and model metadata, model configuration, infer
(iris, onnx-tensor, text-stats) checked against the golden files, typed `contents`
as well as raw bytes, streaming, statistics, repository index / unload / load, a keyed request
served by its per-key model, and a call whose deadline passes: its queued rows are
dropped (counted in /metrics, parsed with prometheus_client) and never run. Exits
non-zero with the reason on the first mismatch.

    usage: python grpc_client.py GRPC_HOST:PORT REPO_ROOT HTTP_HOST:PORT PLUGIN_ROOT

PLUGIN_ROOT holds iris, text-stats, onnx-tensor (with `[[key_models]]` mapping the
key "de" to tiny_mlp_v2.onnx) and `slow` (the hostile test plugin, one instance,
batches of one, reading its go signal from PLUGIN_ROOT/slow/signal).
"""

import json
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from checks import TOLERANCE, check, check_iris, golden


def fails(call, code, text):
    """`call` must fail with the gRPC status `code` and a message containing `text`."""
    try:
        call()
    except InferenceServerException as e:
        check(e.status() == f"StatusCode.{code}" and text in e.message(), f"expected {code} '{text}', got {e}")
        return
    check(False, f"expected {code} '{text}', got success")


def metrics(http):
    with urllib.request.urlopen(f"http://{http}/metrics") as response:
        text = response.read().decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


def main():
    url, root, http, plugins = sys.argv[1], Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    client = grpcclient.InferenceServerClient(url=url)

    check(client.is_server_live() and client.is_server_ready(), "server live and ready")
    check(client.is_model_ready("iris") and not client.is_model_ready("nope"), "model readiness")
    server = client.get_server_metadata(as_json=True)
    for extension in ("model_configuration", "statistics", "model_repository"):
        check(extension in server["extensions"], f"extensions: {server}")
    meta = client.get_model_metadata("iris", as_json=True)
    check(
        [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"] + meta["outputs"]]
        == [("input", "FP32", ["-1", "4"]), ("label", "BYTES", ["-1"]), ("probabilities", "FP32", ["-1", "3"])],
        f"iris metadata: {meta}",
    )
    config = client.get_model_config("iris", as_json=True)["config"]
    check(config["max_batch_size"] == 64 and config["input"][0]["dims"] == ["4"], f"iris config: {config}")
    check(
        [(o["name"], o["data_type"]) for o in config["output"]]
        == [("label", "TYPE_STRING"), ("probabilities", "TYPE_FP32")],
        f"iris config: {config}",
    )
    check("dynamic_batching" in config and config["instance_group"][0]["kind"] == "KIND_CPU", f"{config}")
    fails(lambda: client.get_model_metadata("nope"), "NOT_FOUND", "unknown model: 'nope'")

    # iris: 150 rows in one request, in raw_input_contents (tritonclient's way).
    iris = golden(root, "iris.jsonl")
    features = np.array([g["example"] for g in iris], dtype=np.float32)
    want = np.array([g["probabilities"] for g in iris], dtype=np.float32)
    inp = grpcclient.InferInput("input", list(features.shape), "FP32")
    inp.set_data_from_numpy(features)
    result = client.infer("iris", [inp], request_id="iris-1")
    response = result.get_response()
    check(response.id == "iris-1", "the request id comes back")
    check(response.parameters["model_id"].string_param.startswith("models/iris.onnx@"), f"{response.parameters}")
    check_iris([x.decode() for x in result.as_numpy("label")], result.as_numpy("probabilities"), iris, "iris")

    # The same rows in typed contents (fp32_contents), through Triton's own stub.
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(url))
    request = service_pb2.ModelInferRequest(model_name="iris")
    typed = request.inputs.add(name="input", datatype="FP32", shape=list(features.shape))
    typed.contents.fp32_contents.extend(features.flatten().tolist())
    request.outputs.add(name="probabilities")
    reply = stub.ModelInfer(request)
    check([o.name for o in reply.outputs] == ["probabilities"], f"{reply.outputs}")
    got = np.frombuffer(reply.raw_output_contents[0], dtype=np.float32).reshape(150, 3)
    check(np.allclose(got, want, atol=TOLERANCE, rtol=0), f"typed iris: max diff {np.abs(got - want).max()}")
    print("iris: 150 rows x raw and typed contents match the golden labels and probabilities")

    # Streaming (ModelStreamInfer): each request answered on the stream, matched by id.
    answers = {}
    client.start_stream(callback=lambda result, error: answers.setdefault(
        (result.get_response().id if result else None), (result, error)))
    for i in range(0, 150, 50):
        part = grpcclient.InferInput("input", [50, 4], "FP32")
        part.set_data_from_numpy(features[i : i + 50])
        client.async_stream_infer("iris", [part], request_id=f"part-{i}")
    client.stop_stream()  # waits for the answers
    check(sorted(answers) == ["part-0", "part-100", "part-50"], f"stream answers: {answers}")
    for i in range(0, 150, 50):
        result, error = answers[f"part-{i}"]
        check(error is None, f"stream error {error}")
        got = result.as_numpy("probabilities")
        check(np.allclose(got, want[i : i + 50], atol=TOLERANCE, rtol=0), f"stream part {i}")
    print("iris: 150 rows over a stream of three requests match")

    # Errors map to gRPC codes.
    bad = grpcclient.InferInput("input", [1, 4], "INT64")
    bad.set_data_from_numpy(np.array([[1, 2, 3, 4]], dtype=np.int64))
    fails(lambda: client.infer("iris", [bad]), "INVALID_ARGUMENT", "expected datatype FP32, got INT64")
    fails(lambda: client.infer("nope", [bad]), "NOT_FOUND", "unknown model")

    # onnx-tensor, unkeyed and keyed: the key chooses the per-key model.
    for key, name, file in ((None, "tiny_mlp.jsonl", "tiny_mlp.onnx"), ("de", "tiny_mlp_v2.jsonl", "tiny_mlp_v2.onnx")):
        rows = golden(root, name)
        examples = np.array([g["example"] for g in rows], dtype=np.float32)
        inp = grpcclient.InferInput("input", list(examples.shape), "FP32")
        inp.set_data_from_numpy(examples)
        result = client.infer("onnx-tensor", [inp], parameters={"key": key} if key else None)
        model_id = result.get_response().parameters["model_id"].string_param
        check(model_id.startswith(f"models/{file}@"), f"key {key}: served by {model_id}")
        for output in ("logits", "hidden"):
            got, want_out = result.as_numpy(output), np.array([g[output] for g in rows], dtype=np.float32)
            check(np.allclose(got, want_out, atol=TOLERANCE, rtol=0), f"key {key} {output}: max diff")
    print("onnx-tensor: unkeyed rows match tiny_mlp, key 'de' rows match tiny_mlp_v2")

    texts = np.array(["great and fast", "bad and slow"], dtype=np.object_)
    inp = grpcclient.InferInput("input", [2], "BYTES")
    inp.set_data_from_numpy(texts)
    labels = [json.loads(r)["label"] for r in client.infer("text-stats", [inp]).as_numpy("output")]
    check(labels == ["positive", "negative"], f"text-stats labels {labels}")

    stats = client.get_inference_statistics("iris", as_json=True)["model_stats"][0]
    check(stats["inference_count"] == "450", f"iris statistics: {stats}")
    check(stats["inference_stats"]["success"]["count"] == "450", f"iris statistics: {stats}")

    # The repository: unload drains and refuses new calls, load brings it back.
    index = client.get_model_repository_index(as_json=True)["models"]
    check({m["name"]: m["state"] for m in index} == dict.fromkeys(["iris", "onnx-tensor", "slow", "text-stats"], "READY"), f"{index}")
    client.unload_model("iris")
    check(not client.is_model_ready("iris"), "iris unloaded")
    fails(lambda: client.infer("iris", [grpcclient.InferInput("input", [0, 4], "FP32")]), "NOT_FOUND", "unknown model")
    index = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
    check(index["iris"]["state"] == "UNAVAILABLE" and index["iris"]["reason"] == "unloaded", f"{index}")
    client.load_model("iris")
    check(client.is_model_ready("iris"), "iris loaded again")
    fails(lambda: client.load_model("nope"), "NOT_FOUND", "no plugin directory 'nope'")
    print("repository: index, unload, load")

    # A call whose time runs out while its rows wait: four rows that block until the
    # signal file appears, one instance, batches of one. Triton's `timeout` parameter
    # (microseconds) sets the limit on the server, so when the error reaches us the
    # server has already given the rows up (a client-side deadline would race the
    # server noticing it). At most the first row was running; the others are dropped
    # and never run.
    rows = np.array(["wait"] * 4, dtype=np.object_)
    inp = grpcclient.InferInput("input", [4], "BYTES")
    inp.set_data_from_numpy(rows)
    fails(lambda: client.infer("slow", [inp], timeout=300_000), "UNAVAILABLE", "request timed out after 300 ms")
    (plugins / "slow" / "signal" / "go").write_text("")
    deadline = time.monotonic() + 60
    while True:
        values = metrics(http)
        cancelled = values.get("slow_cancelled_examples_total", 0)
        ran = sum(v for k, v in values.items() if k == "slow_num_inferences_total")
        if cancelled + ran == 4:
            break
        check(time.monotonic() < deadline, f"cancelled {cancelled}, ran {ran}")
        time.sleep(0.05)
    check(cancelled >= 3 and ran <= 1, f"cancelled {cancelled}, ran {ran}")
    print(f"cancellation: {int(cancelled)} rows dropped after the deadline, {int(ran)} ran")
    print("ok")


if __name__ == "__main__":
    main()
