"""Drives a running `runinfer serve` with clients nobody here wrote: Triton's
`tritonclient[http]` (health, metadata, configuration, statistics, infer in both
the JSON and the binary tensor form, repository index / unload / load) and
`prometheus_client`'s parser on /metrics. Checks the numbers against the golden
files. Exits non-zero with the reason on the first mismatch.

    usage: python oip_client.py HOST:PORT REPO_ROOT
"""

import json
import sys
import urllib.request
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from checks import TOLERANCE, check, golden


def fits(shape, declared):
    """A response shape fits a metadata shape where -1 is any size."""
    return len(shape) == len(declared) and all(d in (-1, s) for s, d in zip(shape, declared))


def infer_by_metadata(client, model, inputs, binary):
    """Asks for every output the model's metadata declares, as a metadata-first client
    does, and checks each returned output against its declaration."""
    meta = client.get_model_metadata(model)
    wanted = [httpclient.InferRequestedOutput(o["name"], binary_data=binary) for o in meta["outputs"]]
    result = client.infer(model, inputs, outputs=wanted)
    got = result.get_response()["outputs"]
    check([o["name"] for o in got] == [o["name"] for o in meta["outputs"]], f"{model}: outputs {got} vs {meta}")
    for o, declared in zip(got, meta["outputs"]):
        check(o["datatype"] == declared["datatype"], f"{model} {o['name']}: {o['datatype']} vs {declared}")
        check(fits(o["shape"], declared["shape"]), f"{model} {o['name']}: shape {o['shape']} vs {declared}")
    return result


def main():
    url, root = sys.argv[1], Path(sys.argv[2])
    client = httpclient.InferenceServerClient(url=url)

    check(client.is_server_live(), "server is live")
    check(client.is_server_ready(), "server is ready")
    check(client.is_model_ready("iris"), "iris is ready")
    check(not client.is_model_ready("no-such-model"), "an unknown model is not ready")
    server = client.get_server_metadata()
    check(server["name"] == "runinfer", f"server metadata: {server}")
    meta = client.get_model_metadata("iris")
    check(meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}], f"iris metadata: {meta}")
    check(
        meta["outputs"]
        == [
            {"name": "label", "datatype": "BYTES", "shape": [-1], "parameters": {"content_type": "str"}},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        ],
        f"iris metadata: {meta}",
    )
    check(meta["versions"] == ["1"], f"iris versions: {meta}")
    # Triton's model configuration extension, as Triton's tools read it.
    config = client.get_model_config("iris")
    check(config["max_batch_size"] == 64, f"iris config: {config}")
    check(config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [4]}], f"iris config: {config}")
    check(
        [(o["name"], o["data_type"], o["dims"]) for o in config["output"]]
        == [("label", "TYPE_STRING", [1]), ("probabilities", "TYPE_FP32", [3])],
        f"iris config: {config}",
    )
    check("model_configuration" in server["extensions"], f"extensions: {server}")
    try:
        client.get_model_metadata("no-such-model")
        check(False, "metadata of an unknown model must fail")
    except InferenceServerException as e:
        check("unknown model" in e.message(), f"unknown model error: {e}")

    # iris: all 150 rows in one request, binary (tritonclient's default) and JSON.
    iris = golden(root, "iris.jsonl")
    features = np.array([g["example"] for g in iris], dtype=np.float32)
    for binary in (True, False):
        inp = httpclient.InferInput("input", list(features.shape), "FP32")
        inp.set_data_from_numpy(features, binary_data=binary)
        result = infer_by_metadata(client, "iris", [inp], binary)
        check(result.get_response()["parameters"]["model_id"].startswith("models/iris.onnx@"), "model id")
        labels = [x.decode() if isinstance(x, bytes) else str(x) for x in result.as_numpy("label")]
        check(labels == [g["label"] for g in iris], f"iris labels {labels[:5]}...")
        probabilities = result.as_numpy("probabilities")
        want = np.array([g["probabilities"] for g in iris], dtype=np.float32)
        check(probabilities.shape == (150, 3), f"iris probabilities shape {probabilities.shape}")
        check(
            np.allclose(probabilities, want, atol=TOLERANCE, rtol=0),
            f"iris probabilities: max diff {np.abs(probabilities - want).max()}",
        )
        # Asking for one output by name, as the metadata names it, returns just that.
        only = client.infer(
            "iris", [inp], outputs=[httpclient.InferRequestedOutput("label", binary_data=binary)], request_id="iris-1"
        )
        check(only.get_response()["id"] == "iris-1", "the request id comes back")
        check([o["name"] for o in only.get_response()["outputs"]] == ["label"], f"{only.get_response()}")
    print("iris: 150 rows x 2 encodings match the golden labels and probabilities")

    # onnx-tensor: named FP32 outputs, default outputs (tritonclient asks for binary).
    mlp = golden(root, "tiny_mlp.jsonl")
    examples = np.array([g["example"] for g in mlp], dtype=np.float32)
    inp = httpclient.InferInput("input", list(examples.shape), "FP32")
    inp.set_data_from_numpy(examples)
    result = infer_by_metadata(client, "onnx-tensor", [inp], True)
    for name in ("logits", "hidden"):
        got = result.as_numpy(name)
        want = np.array([g[name] for g in mlp], dtype=np.float32)
        check(got.shape == want.shape, f"{name} shape {got.shape} vs {want.shape}")
        check(np.allclose(got, want, atol=TOLERANCE, rtol=0), f"{name}: max diff {np.abs(got - want).max()}")
    print(f"onnx-tensor: {len(mlp)} rows of logits and hidden match")

    # A text handler through BYTES, both encodings.
    texts = np.array(["great and fast", "bad and slow"], dtype=np.object_)
    for binary in (True, False):
        inp = httpclient.InferInput("input", [2], "BYTES")
        inp.set_data_from_numpy(texts, binary_data=binary)
        result = infer_by_metadata(client, "text-stats", [inp], binary)
        labels = [json.loads(r)["label"] for r in result.as_numpy("output")]
        check(labels == ["positive", "negative"], f"text-stats labels {labels}")
    print("text-stats: BYTES in, JSON out")

    # Errors come back as the protocol's {"error": ...}.
    bad = httpclient.InferInput("input", [1, 4], "INT64")
    bad.set_data_from_numpy(np.array([[1, 2, 3, 4]], dtype=np.int64))
    try:
        client.infer("iris", [bad])
        check(False, "a wrong datatype must fail")
    except InferenceServerException as e:
        check("expected datatype FP32, got INT64" in e.message(), f"datatype error: {e}")
        check(e.status() == "400", f"status {e.status()}")

    # Triton's statistics extension, read by tritonclient: every iris row served.
    stats = client.get_inference_statistics("iris")["model_stats"][0]
    check(stats["inference_count"] == 600, f"iris statistics: {stats}")
    check(stats["inference_stats"]["success"]["count"] == 600, f"iris statistics: {stats}")
    check(stats["execution_count"] >= 1 and stats["inference_stats"]["fail"]["count"] == 0, f"{stats}")

    # Triton's repository extension, through tritonclient: unload drains and refuses
    # new requests, load brings the plugin back.
    index = {m["name"]: m["state"] for m in client.get_model_repository_index()}
    check(index.get("text-stats") == "READY", f"repository index: {index}")
    client.unload_model("text-stats")
    check(not client.is_model_ready("text-stats"), "text-stats unloaded")
    index = {m["name"]: m for m in client.get_model_repository_index()}
    check(index["text-stats"]["reason"] == "unloaded", f"repository index: {index}")
    client.load_model("text-stats")
    check(client.is_model_ready("text-stats"), "text-stats loaded again")
    try:
        client.load_model("no-such-plugin")
        check(False, "loading an unknown plugin must fail")
    except InferenceServerException as e:
        check("no plugin directory" in e.message(), f"load error: {e}")
    print("repository: index, unload, load")

    # /metrics is OpenMetrics text: it parses with prometheus_client's strict parser
    # and counts what was sent.
    with urllib.request.urlopen(f"http://{url}/metrics") as response:
        content_type = response.headers["Content-Type"]
        text = response.read().decode()
    check(content_type.startswith("application/openmetrics-text"), f"content type {content_type}")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    served = {
        name: sum(s.value for s in f.samples if s.name.endswith("_total"))
        for name, f in families.items()
        if name.endswith("_num_inferences") and f.type == "counter"
    }
    # iris: 150 rows, all outputs then the label alone, in both encodings.
    want = {"iris_num_inferences": 600, "onnx_tensor_num_inferences": len(mlp), "text_stats_num_inferences": 4}
    # Every loaded plugin's series exists from load; the ones not called stay at 0.
    check(
        all(served.get(name) == count for name, count in want.items())
        and all(count == 0 for name, count in served.items() if name not in want),
        f"inferences in /metrics: {served}, expected {want} and 0 for the others",
    )
    latency = families["iris_inference_batch_latency_micro_secs"]
    check(latency.type == "histogram", f"latency type {latency.type}")
    print(f"/metrics: {len(families)} families parsed; inferences {served}")
    print("ok")


if __name__ == "__main__":
    main()
