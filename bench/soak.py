"""Soak test of `runinfer serve` (run by bench/soak.sh).

Serves a plugin root that mixes the bundled plugins with a hostile one that loops into
its time limit, sends requests at a fixed rate for a set time, refreshes a model every
30 s, and samples the server's RSS, open file descriptors, error count and p99 latency
every 10 s. Prints a Markdown table (and writes it to the file given by --out).

Usage: soak.py BINARY PLUGIN_ROOT [--seconds 600] [--rate 200] [--out FILE]
"""

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time

SAMPLE_EVERY = 10
REFRESH_EVERY = 30

# (plugin, request body, share of the rate); the hostile one is sent separately.
IRIS = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}
TEXT = {"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1], "data": ["great and fast"]}]}
TENSOR = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2, 3], "data": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}]}
MIX = [("iris", IRIS, 0.5), ("iris-refresh", IRIS, 0.2), ("text-stats", TEXT, 0.15), ("onnx-tensor", TENSOR, 0.15)]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.latencies = []
        self.errors = 0
        self.requests = 0
        self.hostile = 0
        self.error_kinds = {}

    def record(self, seconds, ok, kind=None):
        with self.lock:
            self.requests += 1
            if ok:
                self.latencies.append(seconds)
            else:
                self.errors += 1
                self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    def window(self):
        with self.lock:
            lat, self.latencies = self.latencies, []
            errors, self.errors = self.errors, 0
            requests, self.requests = self.requests, 0
            hostile, self.hostile = self.hostile, 0
        lat.sort()
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e6 if lat else float("nan")
        p50 = lat[len(lat) // 2] * 1e6 if lat else float("nan")
        return requests, errors, p50, p99, hostile


def sender(address, schedule, stats, stop):
    """Sends the requests of `schedule` (plugin, body) at its share of the rate."""
    host, port = address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    for plugin, body, at in schedule:
        if stop.is_set():
            break
        delay = at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        start = time.monotonic()
        try:
            conn.request("POST", f"/v2/models/{plugin}/infer", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            stats.record(time.monotonic() - start, response.status == 200, f"{plugin} {response.status}")
        except (OSError, http.client.HTTPException) as e:
            stats.record(0, False, f"{plugin} {type(e).__name__}")
            conn.close()
            conn = http.client.HTTPConnection(host, int(port), timeout=30)


def hostile_sender(address, stats, stop):
    """One looping request a second to the hostile plugin: each runs into its time limit."""
    host, port = address.split(":")
    body = json.dumps({"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1], "data": ["loop"]}]})
    while not stop.wait(1.0):
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            conn.request("POST", "/v2/models/hostile/infer", body)
            conn.getresponse().read()
            with stats.lock:
                stats.hostile += 1
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()


def refresher(root, stop, counter):
    """Every 30 s a new iris model file for the `iris-refresh` plugin's pattern."""
    models = os.path.join(root, "iris-refresh", "models")
    n = 1
    while not stop.wait(REFRESH_EVERY):
        n += 1
        staged = os.path.join(models, f".iris-{n:04}.onnx")
        shutil.copy(os.path.join(root, "iris", "models", "iris.onnx"), staged)
        os.rename(staged, os.path.join(models, f"iris-{n:04}.onnx"))
        old = os.path.join(models, f"iris-{n - 2:04}.onnx")
        if os.path.exists(old):
            os.remove(old)
        counter[0] += 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("root")
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--out")
    args = parser.parse_args()

    server = subprocess.Popen(
        [args.binary, "serve", "--port", "0", "--plugins", args.root, "--settle-ms", "200"],
        stderr=subprocess.PIPE,
        text=True,
    )
    address = None
    for line in server.stderr:
        if " on http://" in line:
            address = line.strip().rsplit(" on http://", 1)[1]
            break
    if address is None:
        sys.exit("runinfer serve did not start")
    log_lines = [0]

    def drain():
        for _ in server.stderr:
            log_lines[0] += 1

    threading.Thread(target=drain, daemon=True).start()

    stats = Stats()
    stop = threading.Event()
    start = time.monotonic() + 0.5
    total = int(args.seconds * args.rate)
    workers = 8
    schedules = [[] for _ in range(workers)]
    weights = [w for _, _, w in MIX]
    for i in range(total):
        # Deterministic mix: request i goes to the plugin whose share covers i.
        x = (i * 0.6180339887) % 1.0
        acc = 0.0
        for (plugin, body, _), w in zip(MIX, weights):
            acc += w
            if x < acc:
                break
        schedules[i % workers].append((plugin, json.dumps(body), start + i / args.rate))
    threads = [threading.Thread(target=sender, args=(address, s, stats, stop)) for s in schedules]
    threads.append(threading.Thread(target=hostile_sender, args=(address, stats, stop)))
    refreshes = [0]
    threads.append(threading.Thread(target=refresher, args=(args.root, stop, refreshes)))
    for t in threads:
        t.start()

    rows = []
    total_errors = 0
    began = time.monotonic()
    try:
        while time.monotonic() - began < args.seconds:
            time.sleep(SAMPLE_EVERY)
            requests, errors, p50, p99, hostile = stats.window()
            total_errors += errors
            row = (
                int(time.monotonic() - began),
                rss_kib(server.pid) / 1024,
                fds(server.pid),
                requests,
                errors,
                hostile,
                p50,
                p99,
                refreshes[0],
            )
            rows.append(row)
            print("| {} s | {:.1f} | {} | {} | {} | {} | {:.0f} | {:.0f} | {} |".format(*row), flush=True)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=35)
        server.terminate()
        server.wait(timeout=30)

    header = (
        "| time | RSS MiB | fds | requests | errors | hostile timeouts | p50 µs | p99 µs | refreshes |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    table = header + "".join(
        "| {} s | {:.1f} | {} | {} | {} | {} | {:.0f} | {:.0f} | {} |\n".format(*r) for r in rows
    )
    first_minute = next((r for r in rows if r[0] >= 60), rows[0])
    last = rows[-1]
    growth = (last[1] - first_minute[1]) / first_minute[1] * 100
    summary = (
        f"\nRSS {first_minute[1]:.1f} MiB at {first_minute[0]} s, {last[1]:.1f} MiB at {last[0]} s "
        f"({growth:+.1f} %); fds {first_minute[2]} -> {last[2]}; errors {total_errors} "
        f"{dict(stats.error_kinds) if stats.error_kinds else ''}; model refreshes {refreshes[0]}; "
        f"server log lines {log_lines[0]}; rate {args.rate:.0f} req/s for {args.seconds} s\n"
    )
    print(summary)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + summary)


if __name__ == "__main__":
    main()
