"""A hostile tenant against `runinfer serve`, checked with clients nobody here wrote.

The plugin root (made by tests/e2e/binary/clients.rs) holds iris and copies of the hostile
test handler: `hostile` (loads), and `batch-bomb`, `ns-forge`, `ns-thief` whose
declared handler info the host must refuse at load. Each misdeed goes to `hostile`
over the Open Inference Protocol; afterwards iris still answers with the golden
labels and /metrics still parses with prometheus_client's strict OpenMetrics parser.

Usage: hostile_client.py HOST:PORT REPO_ROOT
"""

import json
import sys
import urllib.error
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def check(condition, message):
    if not condition:
        raise SystemExit(f"FAILED: {message}")


def request(url, path, body=None):
    """(status, parsed JSON body) of one request."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{url}{path}", data=data)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def infer_text(url, model, deed):
    status, body = request(
        url,
        f"/v2/models/{model}/infer",
        {"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1], "data": [deed]}]},
    )
    return status, json.loads(body)


def main():
    url, root = sys.argv[1], sys.argv[2]

    # Handler info the host refused: those plugins are not served, the others are.
    for name in ("batch-bomb", "ns-forge", "ns-thief"):
        status, _ = request(url, f"/v2/models/{name}/ready")
        check(status == 404, f"{name} must not be served (status {status})")
    for name in ("iris", "hostile"):
        status, _ = request(url, f"/v2/models/{name}/ready")
        check(status == 200, f"{name} ready: {status}")

    # Each misdeed is refused with the reason, as that request's error.
    refused = {
        "metric-reserved": "is reserved",
        "metric-shadow": "is reserved",
        "metric-infinite": "is not a finite number",
        "metric-nan": "is not a finite number",
        "deep-json": "JSON nested more than 128 levels deep",
        "duplicate-names": "named two fields",
        "empty-giant": "describes more than 65536 empty arrays",
    }
    for deed, reason in refused.items():
        status, body = infer_text(url, "hostile", deed)
        check(status in (400, 500), f"{deed}: status {status}")
        check(reason in body.get("error", ""), f"{deed}: {body}")
    for deed in ("metric-ok", "log-forge", "log-flood"):
        status, body = infer_text(url, "hostile", deed)
        check(status == 200, f"{deed}: {status} {body}")
    status, body = infer_text(url, "hostile", "metric-flood")
    flood = body["outputs"][0]["data"][0]
    check(flood.startswith("62 made;") and "max_custom_metrics (64)" in flood, flood)
    print("hostile: every misdeed refused with its reason")

    # Shapes near 2^62 are a clear 400, not a wrapped size or a dead connection.
    for shape in ([2**62, 4], [1, 2**62, 2**62], [2**40, 0], [1, 2**40, 0]):
        status, body = request(
            url,
            "/v2/models/iris/infer",
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": shape, "data": []}]},
        )
        check(status == 400, f"shape {shape}: {status} {body[:200]}")
    print("shapes: overflowing and empty-giant shapes refused")

    # iris, next door, still answers with the golden labels.
    golden = [json.loads(line) for line in open(f"{root}/tests/golden/iris.jsonl")]
    rows = [g["example"] for g in golden[:30]]
    status, body = request(
        url,
        "/v2/models/iris/infer",
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [len(rows), 4], "data": rows}]},
    )
    check(status == 200, f"iris: {status} {body[:300]}")
    outputs = {o["name"]: o for o in json.loads(body)["outputs"]}
    labels = outputs["label"]["data"]
    check(labels == [g["label"] for g in golden[:30]], f"iris labels {labels}")
    print("iris: 30 golden labels while the neighbour misbehaved")

    # The scrape parses with the strict parser: no family twice, nothing forged, no
    # non-finite observation, and the hostile plugin's own series are the host's.
    with urllib.request.urlopen(f"http://{url}/metrics") as response:
        text = response.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    check(not any("forged" in name for name in families), "a forged family")
    values = {s.name: s.value for f in families.values() for s in f.samples if not s.labels}
    inferences = sum(
        s.value
        for s in families["hostile_num_inferences"].samples
        if s.name == "hostile_num_inferences_total"
    )
    # metric-ok, log-forge, log-flood and metric-flood succeeded.
    check(inferences == 4, f"hostile_num_inferences_total {inferences} (the host counts, not the guest)")
    check(values.get("hostile_misdeeds_total") == 1, f"hostile_misdeeds_total {values.get('hostile_misdeeds_total')}")
    for name in ("iris_num_inferences", "iris_failed_batches_counter"):
        check(name in families, f"{name} exposed")
    print(f"/metrics: {len(families)} families parsed by prometheus_client")
    print("ok")


if __name__ == "__main__":
    main()
