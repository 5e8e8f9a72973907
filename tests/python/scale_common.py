"""What the Spark and Ray end-to-end jobs share: the machine's shared servers, and the
killer that takes one down mid-job."""

import json
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path


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
