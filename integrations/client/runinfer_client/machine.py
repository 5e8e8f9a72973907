"""One `runinfer serve` per machine, shared by every Python worker process on it.

Spark executors and Ray actors are separate processes that come and go; starting a
server in each would load every model once per process. Instead, the workers of a
machine that use the same binary, plugin root and arguments share one server:

* a per-machine directory (under the temp dir, or `$RUNINFER_MACHINE_DIR`, named by a
  hash of the command) holds `start.lock` (who may start a server), `lease`,
  `server.json` (its address) and `server.log` (its log);
* every worker holds a *shared* `flock` on `lease` for its whole life: the kernel
  releases it however the worker ends (exit, crash, SIGKILL);
* the server runs under a small supervisor (`python -m runinfer_client.supervisor`,
  in its own session so that a worker's death does not take it along) that stops it
  gracefully as soon as no worker holds the lease: the server never outlives them;
* a worker whose call fails checks the server under `start.lock` and, if it is gone,
  starts a new one: a server killed mid-job is replaced and the job goes on.
"""

import fcntl
import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

from .server import LOG, RuninferError, RuninferServer


def machine_dir(command: Sequence[str]) -> Path:
    """The directory the workers of this machine share for `command`."""
    digest = hashlib.sha256("\0".join([socket.gethostname(), *command]).encode()).hexdigest()[:16]
    path = Path(os.environ.get("RUNINFER_MACHINE_DIR", tempfile.gettempdir())) / f"runinfer-{digest}"
    path.mkdir(parents=True, exist_ok=True)
    return path


class MachineServer(RuninferServer):
    """A [`RuninferServer`] shared by the worker processes of one machine (see the
    module docs). Same calls (`infer`, `model_metadata`, `call`, ...); `restarts`
    counts the servers this process had to start again."""

    def __init__(
        self,
        binary: str,
        plugin_dir: str,
        extra_args: Sequence[str] = (),
        start_timeout_s: float = 120.0,
        env: Optional[dict] = None,
    ):
        command = [binary, "serve", "--plugins", plugin_dir, "--address", "127.0.0.1", "--port", "0",
                   "--exit-on-stdin-eof", *extra_args]
        self.directory = machine_dir(command)
        # Held until this process ends: the server lives while any worker does.
        self._lease = open(self.directory / "lease", "a+")
        fcntl.flock(self._lease, fcntl.LOCK_SH)
        self._server_command = command
        super().__init__(binary, plugin_dir, extra_args, start_timeout_s, env)

    def _read(self) -> Optional[dict]:
        try:
            return json.loads((self.directory / "server.json").read_text())
        except (OSError, ValueError):
            return None

    def _healthy(self, info: Optional[dict]) -> bool:
        """Whether the server `info` describes answers; if so, it is the one used.
        (A process id is not enough: a killed server stays a zombie until its
        supervisor reaps it.)"""
        if not info:
            return False
        self._process_info, self._address = info, info["address"]
        self._local = threading.local()
        try:
            return self._request("GET", "/v2/health/ready")[0] == 200
        except (OSError, http.client.HTTPException):
            return False

    def _start(self) -> None:
        with open(self.directory / "start.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self._healthy(self._read()):
                return
            (self.directory / "server.json").unlink(missing_ok=True)
            LOG.info("starting a shared %s", " ".join(self._server_command))
            supervisor = subprocess.Popen(
                [sys.executable, "-m", "runinfer_client.supervisor", str(self.directory), "--", *self._server_command],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                env={**(self._env or os.environ), "PYTHONPATH": _pythonpath()},
                start_new_session=True,
            )
            deadline = time.monotonic() + self._start_timeout_s
            while time.monotonic() < deadline:
                if self._healthy(self._read()):
                    return
                if supervisor.poll() is not None:
                    raise RuninferError(f"runinfer serve could not start:\n{supervisor.stderr.read()}")
                time.sleep(0.05)
            raise RuninferError(f"runinfer serve did not become ready in {self._start_timeout_s} s")

    def ensure_running(self, grace_s: float = 0.0) -> str:
        """The server's address. After a failed call (`grace_s` > 0), checks the shared
        server and starts another if it is gone."""
        if not grace_s and self._address:
            return self._address
        with self._lock:
            if self._healthy(self._read()):  # ours, or one another worker started
                return self._address
            LOG.warning("the shared runinfer serve is gone; starting it again")
            self.restarts += 1
            self._start()
            return self._address

    def pid(self) -> int:
        return self._process_info["server"]

    def stop(self) -> None:
        """Lets go of this process's lease; the server stops when no worker holds one."""
        fcntl.flock(self._lease, fcntl.LOCK_UN)


def _pythonpath() -> str:
    """This package's parent first, so the supervisor imports the same code."""
    here = str(Path(__file__).resolve().parent.parent)
    rest = os.environ.get("PYTHONPATH")
    return here + (os.pathsep + rest if rest else "")
