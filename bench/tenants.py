"""A light tenant next to a heavy one on one `runinfer serve`: does the host share the
cores fairly? (bench/tenants.sh)

* light: the bundled iris plugin (tenant `light`, one instance), driven open-loop at a
  fixed rate (requests sent on a schedule, latency measured from the scheduled time,
  so a stalled server is not hidden by a client that waits for it);
* heavy: the test suite's hostile handler doing fixed CPU work per row (tenant
  `heavy`, 16 instances), driven closed-loop by 32 connections: enough to saturate
  every core.

Runs, each on a fresh server: light alone, heavy alone (with and without the
host-wide slots), both with the fair scheduler
(`--workers` = cores, the default), and both with the host-wide slots effectively off
(`--workers 256`: every instance a thread of its own, the OS shares the cores, what
runinfer did before). Alternates the scenarios `--reps` times and prints medians.
"""

import argparse
import http.client
import json
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIGHT_BODY = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                     "data": [5.1, 3.5, 1.4, 0.2]}]})
HEAVY_BODY = json.dumps({"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1],
                                     "data": ["work"]}]})


def make_plugins(work):
    plugins = work / "plugins"
    light = plugins / "light"
    shutil.copytree(ROOT / "plugins" / "iris", light,
                    ignore=shutil.ignore_patterns("src", "target", "Cargo.toml", "*.md"))
    manifest = (light / "plugin.toml").read_text().replace('name = "iris"', 'name = "light"\ntenant = "light"')
    # Each request answered at once (no waiting for a batch to fill).
    (light / "plugin.toml").write_text(manifest + "\n[batching]\nmax_batch_size = 1\n[limits]\ninstances = 1\n")
    heavy = plugins / "heavy"
    heavy.mkdir()
    shutil.copy(ROOT / "tests" / "plugins" / "hostile" / "hostile.wasm", heavy)
    (heavy / "plugin.toml").write_text(
        'name = "heavy"\ncomponent = "hostile.wasm"\ntenant = "heavy"\n'
        "[batching]\nmax_batch_size = 1\n[limits]\ninstances = 16\n")
    return plugins


def start(binary, plugins, work, workers, extra):
    command = [str(binary), "serve", "--plugins", str(plugins), "--port", "0", "--no-grpc",
               "--no-watch", "--cache-dir", str(work / "cache")]
    if workers:
        command += ["--workers", str(workers)]
    command += extra
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    for line in server.stderr:
        match = re.search(r" on http://(\S+)$", line.strip())
        if match:
            threading.Thread(target=server.stderr.read, daemon=True).start()
            return server, match.group(1)
    raise SystemExit(f"runinfer serve exited: {server.wait()}")


def post(connection, path, body):
    connection.request("POST", path, body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"{path}: {response.status} {data[:200]!r}")


def light_load(address, rate, seconds, latencies, stop):
    """Open loop: request i is due at start + i/rate; its latency counts from then."""
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port))
    start = time.perf_counter()
    i = 0
    while not stop.is_set():
        due = start + i / rate
        if due - start > seconds:
            break
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        post(connection, "/v2/models/light/infer", LIGHT_BODY)
        latencies.append(time.perf_counter() - due)
        i += 1


def light_process(address, rate, seconds):
    latencies = []
    cpu = time.process_time()
    light_load(address, rate, seconds, latencies, threading.Event())
    return latencies, time.process_time() - cpu


def cpu_seconds(pid):
    """User + system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def heavy_load(address, done, stop):
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    while not stop.is_set():
        post(connection, "/v2/models/heavy/infer", HEAVY_BODY)
        done.append(time.perf_counter())


def scenario(binary, plugins, work, workers, light, heavy, args):
    server, address = start(binary, plugins, work, workers, args.serve_arg)
    try:
        # Warm both (instances start, models load) before measuring.
        connection = http.client.HTTPConnection(*address.rsplit(":", 1))
        post(connection, "/v2/models/light/infer", LIGHT_BODY)
        post(connection, "/v2/models/heavy/infer", HEAVY_BODY)
        stop = threading.Event()
        latencies, done = [], []
        threads = []
        if heavy:
            threads += [threading.Thread(target=heavy_load, args=(address, done, stop))
                        for _ in range(args.heavy_connections)]
        for t in threads:
            t.start()
        time.sleep(args.settle if heavy else 0)
        begin = time.perf_counter()
        server_cpu = cpu_seconds(server.pid)
        light_cpu = 0.0
        if light:
            # In a process of its own: the heavy load's client threads would hold
            # this one's GIL and add their wait to its latencies.
            with multiprocessing.Pool(1) as pool:
                latencies, light_cpu = pool.apply(light_process, (address, args.rate, args.seconds))
        else:
            time.sleep(args.seconds)
        end = time.perf_counter()
        server_cpu = cpu_seconds(server.pid) - server_cpu
        stop.set()
        for t in threads:
            t.join()
        rows = sum(1 for t in done if begin <= t <= end)
        result = {"heavy_rows_per_sec": rows / (end - begin) if heavy else None,
                  # Share of the machine's cores the server and the light client used.
                  "server_cores": server_cpu / (end - begin),
                  "light_client_cores": light_cpu / (end - begin)}
        if light:
            latencies.sort()
            result["light_p50_ms"] = 1000 * latencies[len(latencies) // 2]
            result["light_p99_ms"] = 1000 * latencies[int(len(latencies) * 0.99)]
        return result
    finally:
        server.terminate()
        server.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--binary", default=str(ROOT / "target" / "release" / "runinfer"))
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=100.0, help="light requests a second")
    parser.add_argument("--heavy-connections", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="one more argument for `runinfer serve` (repeat), e.g. --serve-arg=--handler-priority=idle")
    parser.add_argument("--fair-only", action="store_true",
                        help="skip the runs without host-wide slots (--workers 256)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="runinfer-tenants-"))
    plugins = make_plugins(work)
    cores = os.cpu_count()
    scenarios = [
        ("light alone", 0, True, False),
        ("heavy alone", 0, False, True),
        ("heavy alone, --workers 256", 256, False, True),
        (f"both, fair scheduler (--workers {cores}, the default)", 0, True, True),
        ("both, no host-wide slots (--workers 256: the OS shares the cores)", 256, True, True),
    ]
    if args.fair_only:
        scenarios = [s for s in scenarios if s[1] != 256]
    results = {name: [] for name, *_ in scenarios}
    for rep in range(args.reps):
        for name, workers, light, heavy in scenarios:
            results[name].append(scenario(Path(args.binary), plugins, work, workers, light, heavy, args))
            print(f"rep {rep + 1} {name}: {results[name][-1]}", flush=True)

    def median(name, key):
        values = [r[key] for r in results[name] if r.get(key) is not None]
        return statistics.median(values) if values else None

    alone_p99 = median("light alone", "light_p99_ms")
    alone_heavy = median("heavy alone", "heavy_rows_per_sec")
    # What the light tenant takes of the machine (its requests in the server, its
    # client) when alone; the heavy tenant's fair throughput is what is left of it.
    light_cores = median("light alone", "server_cores") + median("light alone", "light_client_cores")
    left = alone_heavy * (1 - light_cores / cores)
    lines = [
        f"{cores} cores; light: iris at {args.rate:.0f} req/s open loop, 1 instance; heavy: "
        f"fixed CPU work per row, 16 instances, {args.heavy_connections} connections; "
        f"{args.seconds:.0f} s a run, medians of {args.reps} alternating runs.",
        "",
        f"The light tenant alone uses {light_cores:.3f} of the {cores} cores (server "
        f"{median('light alone', 'server_cores'):.3f}, its client "
        f"{median('light alone', 'light_client_cores'):.3f}): what is left for the heavy "
        f"tenant is {left:.1f} rows/s (heavy alone × (1 − {light_cores:.3f}/{cores})).",
        "",
        "| scenario | light p50 ms | light p99 ms | light p99 ÷ alone | heavy rows/s | heavy ÷ alone | heavy ÷ what is left | server cores used |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, _, light, _ in scenarios:
        p50, p99 = median(name, "light_p50_ms"), median(name, "light_p99_ms")
        heavy = median(name, "heavy_rows_per_sec")
        cell = lambda v, f: "" if v is None else f.format(v)
        lines.append(
            f"| {name} | {cell(p50, '{:.2f}')} | {cell(p99, '{:.2f}')} | "
            f"{cell(p99 / alone_p99 if p99 is not None else None, '{:.2f}×')} | "
            f"{cell(heavy, '{:.1f}')} | "
            f"{cell(heavy / alone_heavy if heavy is not None else None, '{:.2f}')} | "
            f"{cell(heavy / left if heavy is not None and light else None, '{:.2f}')} | "
            f"{median(name, 'server_cores'):.2f} |")
    report = "\n".join(lines)
    print(report)
    out = ROOT / "target" / "bench" / "tenants.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
