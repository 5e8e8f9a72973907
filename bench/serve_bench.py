"""Drives `runinfer serve` with wrk (HTTP) and bench/src/grpc_load.rs (gRPC), and
MLServer (scikit-learn runtime, same MLP) with wrk, side by side in one run; see
bench/serve.sh (which builds and installs what this needs). Standard library only."""

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import socket
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "release" / "runinfer"
GRPC_LOAD = ROOT / "target" / "release" / "grpc-load"
WORK = ROOT / "target" / "bench-serve"

# One row of four features: the request every client sends.
BODY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}
BATCHING = {
    # up to 32 rows; the oldest waits at most 2 ms for more
    "on": "max_batch_size = 32\nmax_batch_duration_ms = 2\n",
    # up to 32 rows of what is queued when an instance frees up; nobody waits
    "eager": "max_batch_size = 32\nmax_batch_duration_ms = 0\n",
    "off": "max_batch_size = 1\n",
}
MODELS = {
    # name: (component plugin, model file, handler args)
    "noop": ("onnx-tensor", ROOT / "bench" / "models" / "noop.onnx", ""),
    "iris": ("iris", ROOT / "plugins" / "iris" / "models" / "iris.onnx", 'labels = "setosa,versicolor,virginica"\n'),
}


def plugin_root():
    """A plugin root with every model twice: batching on and off."""
    plugins = WORK / "plugins"
    shutil.rmtree(plugins, ignore_errors=True)
    for model, (component, model_file, args) in MODELS.items():
        for mode, batching in BATCHING.items():
            name = f"{model}-batch-{mode}"
            d = plugins / name
            (d / "models").mkdir(parents=True)
            shutil.copy(ROOT / "plugins" / component / f"{component}.wasm", d)
            shutil.copy(model_file, d / "models" / "model.onnx")
            manifest = (
                f'name = "{name}"\ncomponent = "{component}.wasm"\n'
                f'metrics_namespace = "{model}_batch_{mode}"\n'
                f'[models]\n{"iris" if model == "iris" else "model"} = "models/model.onnx"\n'
                f"[batching]\n{batching}[limits]\nqueue_size = 4096\n"
            )
            if args:
                manifest += f"[args]\n{args}"
            (d / "plugin.toml").write_text(manifest)
    return plugins


def start_server(plugins):
    """`runinfer serve` on free ports; returns the process, HTTP and gRPC addresses."""
    server = subprocess.Popen(
        [str(BINARY), "serve", "--plugins", str(plugins), "--port", "0", "--no-watch",
         "--cache-dir", str(WORK / "cache")],
        stderr=subprocess.PIPE, text=True,
    )
    grpc = None
    for line in server.stderr:
        if "OIP gRPC" in line:
            grpc = line.strip().rsplit(" on ", 1)[1]
        match = re.search(r" on http://(\S+)$", line.strip())
        if match:
            threading.Thread(target=server.stderr.read, daemon=True).start()
            return server, match.group(1), grpc
    raise SystemExit(f"runinfer serve exited: {server.wait()}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlserver(python):
    """MLServer on the iris MLP (bench/mlserver_model.py); returns the process and
    its HTTP address once it answers."""
    repo = WORK / "mlserver"
    shutil.rmtree(repo, ignore_errors=True)
    http, grpc, metrics = free_port(), free_port(), free_port()
    subprocess.run([python, str(ROOT / "bench" / "mlserver_model.py"), str(repo), str(http), str(grpc), str(metrics)],
                   check=True, capture_output=True)
    server = subprocess.Popen([str(Path(python).parent / "mlserver"), "start", str(repo)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{http}"
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://{address}/v2/models/iris/ready", timeout=1) as r:
                if r.status == 200:
                    return server, address
        except OSError:
            pass
        if server.poll() is not None:
            raise SystemExit(f"mlserver exited: {server.returncode}")
        time.sleep(0.1)
    raise SystemExit("mlserver never became ready")


UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def wrk(url, connections, seconds, script=None):
    """Runs wrk; returns requests/s, p50 and p99 in µs, and the failed requests."""
    cmd = ["wrk", f"-t{min(connections, 2)}", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if script:
        cmd += ["-s", script]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    def latency(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * UNITS[m.group(2)]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    failed = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    errors = re.search(r"Socket errors: (.*)", out)
    if errors:
        failed += sum(int(n) for n in re.findall(r"\d+", errors.group(1)))
    return rps, latency(50), latency(99), failed


def grpc(address, call, connections, seconds):
    """grpc-load: the gRPC twin of `wrk`, same return values."""
    out = subprocess.run([str(GRPC_LOAD), address, call, str(connections), str(seconds)],
                         capture_output=True, text=True, check=True).stdout
    r = json.loads(out)
    return r["rps"], float(r["p50"]), float(r["p99"]), r["failed"]


def valid(failed):
    """wrk counts non-2xx answers in requests/s: a row with any is not a measurement
    of serving, and says so."""
    return str(failed) if failed == 0 else f"**{failed} — invalid row**"


def median_of(reps, run):
    results = [run() for _ in range(reps)]
    return tuple(statistics.median(r[i] for r in results) for i in range(3)) + (sum(r[3] for r in results),)


def p4_p5_and_peer(args, http, grpc_address, script, mlserver_python):
    """The serving goals, side by side: runinfer over HTTP and gRPC (each with its own
    floor: the health route / ServerLive) and MLServer on the same MLP, 1 row per
    request, batching eager. Returns Markdown lines."""
    conc = (1, 8, 64)
    measure = lambda run: {c: median_of(args.reps, lambda: run(c)) for c in conc}
    rows = {}
    rows[("runinfer HTTP", "GET /v2/health/live (floor)")] = measure(lambda c: wrk(f"http://{http}/v2/health/live", c, args.seconds))
    for model in ("noop", "iris"):
        url = f"http://{http}/v2/models/{model}-batch-eager/infer"
        rows[("runinfer HTTP", f"infer {model}")] = measure(lambda c: wrk(url, c, args.seconds, str(script)))
    rows[("runinfer gRPC", "ServerLive (floor)")] = measure(lambda c: grpc(grpc_address, "live", c, args.seconds))
    for model in ("noop", "iris"):
        rows[("runinfer gRPC", f"ModelInfer {model}")] = measure(
            lambda c: grpc(grpc_address, f"{model}-batch-eager", c, args.seconds))
    mlserver, address = start_mlserver(mlserver_python)
    try:
        wrk(f"http://{address}/v2/models/iris/infer", 8, 1, str(script))  # warm up
        rows[("MLServer 1.7.1 HTTP", "GET /v2/health/live (floor)")] = measure(
            lambda c: wrk(f"http://{address}/v2/health/live", c, args.seconds))
        rows[("MLServer 1.7.1 HTTP", "infer iris (scikit-learn runtime)")] = measure(
            lambda c: wrk(f"http://{address}/v2/models/iris/infer", c, args.seconds, str(script)))
    finally:
        mlserver.terminate()
        mlserver.wait()
    lines = [
        "### P4, P5 and the peer: 1 row per request, iris and a no-op model, batching eager",
        "",
        "| server | call | c=1 req/s | c=1 p50 µs | c=8 req/s | c=8 p99 µs | c=64 req/s | c=64 p99 µs | failed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (server, call), r in rows.items():
        failed = sum(r[c][3] for c in conc)
        lines.append(
            f"| {server} | {call} | {r[1][0]:,.0f} | {r[1][1]:.0f} | {r[8][0]:,.0f} | {r[8][2]:,.0f} | "
            f"{r[64][0]:,.0f} | {r[64][2]:,.0f} | {valid(failed)} |"
        )
    http_floor = rows[("runinfer HTTP", "GET /v2/health/live (floor)")]
    grpc_floor = rows[("runinfer gRPC", "ServerLive (floor)")]
    peer = rows[("MLServer 1.7.1 HTTP", "infer iris (scikit-learn runtime)")]
    lines += ["", "| figure | value | goal |", "|---|---:|---|"]
    for protocol, floor, call in (("HTTP", http_floor, "infer"), ("gRPC", grpc_floor, "ModelInfer")):
        for model in ("noop", "iris"):
            r = rows[(f"runinfer {protocol}", f"{call} {model}")]
            lines.append(f"| P4 {protocol}, {model}: infer p50 − floor p50 at c=1 | {r[1][1] - floor[1][1]:.0f} µs | ≤ 25 µs |")
    for protocol, floor, call in (("HTTP", http_floor, "infer"), ("gRPC", grpc_floor, "ModelInfer")):
        r = rows[(f"runinfer {protocol}", f"{call} iris")]
        lines.append(f"| P5 {protocol}, iris: infer req/s ÷ floor req/s at c=64 | {r[64][0] / floor[64][0]:.2f} | ≥ 0.8 |")
    iris = rows[("runinfer HTTP", "infer iris")]
    lines.append(f"| runinfer ÷ MLServer, iris req/s at c=8 (HTTP) | {iris[8][0] / peer[8][0]:.1f}× | ≥ 20× |")
    lines.append(f"| p99 at c=8: runinfer / MLServer | {iris[8][2]:,.0f} / {peer[8][2]:,.0f} µs | lower |")
    return lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--mlserver-python", help="python of a venv with mlserver (bench/serve.sh makes it)")
    args = parser.parse_args()
    concurrency = [int(c) for c in args.concurrency.split(",")]
    WORK.mkdir(parents=True, exist_ok=True)
    script = WORK / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [[{json.dumps(BODY)}]]\n"
    )
    server, address, grpc_address = start_server(plugin_root())
    base = f"http://{address}"
    lines = []
    try:
        if args.mlserver_python:
            lines += p4_p5_and_peer(args, address, grpc_address, script, args.mlserver_python) + [""]
        wrk(f"{base}/v2/models/iris-batch-on/infer", 8, 1, str(script))  # warm up
        health = median_of(args.reps, lambda: wrk(f"{base}/v2/health/live", 1, args.seconds))
        noop = median_of(args.reps, lambda: wrk(f"{base}/v2/models/noop-batch-off/infer", 1, args.seconds, str(script)))
        lines += [
            "### Overhead per request at concurrency 1 (model that does nothing, batching off)",
            "",
            "| request | requests/s | p50 µs | p99 µs | failed |",
            "|---|---:|---:|---:|---:|",
            f"| `GET /v2/health/live` (HTTP floor: wrk + hyper on loopback) | {health[0]:,.0f} | {health[1]:.0f} | {health[2]:.0f} | {valid(health[3])} |",
            f"| `POST /v2/models/noop/infer`, 1 row | {noop[0]:,.0f} | {noop[1]:.0f} | {noop[2]:.0f} | {valid(noop[3])} |",
            f"| runinfer's cost per request (difference of p50) | | {noop[1] - health[1]:.0f} | | |",
            "",
            "### Throughput and latency, 1 row per request",
            "",
            "| model | batching | concurrency | requests/s | p50 µs | p99 µs | failed |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for model in MODELS:
            for mode in BATCHING:
                for c in concurrency:
                    url = f"{base}/v2/models/{model}-batch-{mode}/infer"
                    rps, p50, p99, failed = median_of(args.reps, lambda: wrk(url, c, args.seconds, str(script)))
                    lines.append(f"| {model} | {mode} | {c} | {rps:,.0f} | {p50:.0f} | {p99:.0f} | {valid(failed)} |")
                    print(lines[-1], file=sys.stderr)
        metrics = subprocess.run(["curl", "-s", f"{base}/metrics"], capture_output=True, text=True).stdout
    finally:
        server.terminate()
        server.wait()
    mean_batch = []
    for model, mode in ((m, b) for m in MODELS for b in ("on", "eager")):
        ns = f"{model}_batch_{mode}"
        total = re.search(rf"^{ns}_inference_request_batch_size_sum\S* ([\d.e+]+)", metrics, re.M)
        count = re.search(rf"^{ns}_inference_request_batch_size_count\S* ([\d.e+]+)", metrics, re.M)
        if total and count:
            mean_batch.append(f"{model} {mode}: {float(total.group(1)) / float(count.group(1)):.1f}")
    header = [
        f"`bench/serve.sh --seconds {args.seconds} --reps {args.reps}` on {platform.node()}, "
        f"{os.cpu_count()} cores, {platform.platform()}; wrk (HTTP) and grpc-load "
        f"(bench/src/grpc_load.rs, gRPC) on the same machine, "
        f"{args.reps} runs of {args.seconds} s each, medians. Batching on = max 32 rows, "
        f"2 ms max wait; eager = max 32 rows, no wait (what is queued when an instance "
        f"frees up); off = batches of 1. Mean batch size over the whole run: "
        f"{', '.join(mean_batch)}.",
        "",
    ]
    text = "\n".join(header + lines) + "\n"
    (ROOT / "target" / "bench").mkdir(parents=True, exist_ok=True)
    (ROOT / "target" / "bench" / "serve.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
