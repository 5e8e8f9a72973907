"""What the Spark and Ray end-to-end jobs share: golden rows, checks, and the killer
that takes the machine's `runinfer serve` down mid-job."""

import json
import os
import signal
import threading
import time
import urllib.request
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


def servers(machine_root):
    """The shared servers under a RUNINFER_MACHINE_DIR: server.json of each."""
    found = []
    for path in Path(machine_root).glob("runinfer-*/server.json"):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            pass
    return found


def served(address, namespace):
    """`<namespace>_num_inferences_total` of a server (0 if it is unreachable)."""
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return 0
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(f"{namespace}_num_inferences_total"))


class Killer(threading.Thread):
    """Kills (SIGKILL) the machine's server once it has served `after` more rows of
    `namespace` than when started: mid-job, whatever the timing."""

    def __init__(self, machine_root, namespace, after):
        super().__init__(daemon=True)
        self.machine_root, self.namespace, self.after = machine_root, namespace, after
        self.killed = None
        self.base = {s["server"]: served(s["address"], namespace) for s in servers(machine_root)}

    def run(self):
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            for s in servers(self.machine_root):
                if served(s["address"], self.namespace) >= self.base.get(s["server"], 0) + self.after:
                    os.kill(s["server"], signal.SIGKILL)
                    self.killed = s
                    return
            time.sleep(0.02)


def wait_gone(machine_root, pids, timeout=60):
    """Every shared server stopped once its workers are gone: nothing left running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return
        time.sleep(0.2)
    raise AssertionError(f"runinfer servers still running after their workers ended: {alive}")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False
