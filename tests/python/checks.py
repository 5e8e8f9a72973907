"""What the Python clients and jobs of the end-to-end tests share: the golden rows
and the checks against them (1e-5, as the Rust tests)."""

import contextlib
import json
import subprocess
import threading
from pathlib import Path

import numpy as np

TOLERANCE = 1e-5


def golden(root, name):
    lines = (Path(root) / "tests" / "golden" / name).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def check_iris(labels, probabilities, rows, what):
    check(list(labels) == [g["label"] for g in rows], f"{what}: labels {list(labels)[:5]}...")
    got = np.asarray(probabilities, dtype=np.float32)
    want = np.array([g["probabilities"] for g in rows], dtype=np.float32)
    check(np.allclose(got, want, atol=TOLERANCE, rtol=0), f"{what}: max diff {np.abs(got - want).max()}")


def check_mlp(logits, hidden, rows, what):
    for name, got in (("logits", logits), ("hidden", hidden)):
        got = np.asarray(got, dtype=np.float32)
        want = np.array([g[name] for g in rows], dtype=np.float32)
        check(np.allclose(got, want, atol=TOLERANCE, rtol=0), f"{what} {name}: max diff {np.abs(got - want).max()}")


@contextlib.contextmanager
def served(binary, plugins):
    """`runinfer serve` (HTTP only, on a free port) of PLUGINS for the block: yields
    its address, and stops it after."""
    server = subprocess.Popen([str(binary), "serve", "--port", "0", "--no-grpc", "--no-watch",
                               "--plugins", str(plugins)], stderr=subprocess.PIPE, text=True)
    try:
        log = []
        while True:
            line = server.stderr.readline()
            check(line, "runinfer serve exited before listening:\n" + "".join(log))
            log.append(line)
            if " on http://" in line:
                address = line.strip().rsplit(" on http://", 1)[1]
                break
        threading.Thread(target=server.stderr.read, daemon=True).start()
        yield address
    finally:
        server.terminate()
        server.wait()
