"""Runs one shared `runinfer serve` for the workers of a machine (see machine.py):

    python -m runinfer_client.supervisor DIR -- runinfer serve ... --exit-on-stdin-eof

Starts the server holding its stdin, writes `DIR/server.json` (address, pids) once
it listens and its log to `DIR/server.log`, and ends it gracefully (closing its stdin) as soon as no worker holds a
shared lock on `DIR/lease`. Exits when the server does, removing `server.json`, so
the next worker that needs it starts another.
"""

import fcntl
import json
import os
import re
import sys
import threading
import time
from pathlib import Path
import subprocess

POLL_S = 0.5


def main() -> int:
    directory = Path(sys.argv[1])
    command = sys.argv[sys.argv.index("--") + 1 :]
    server = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    address = grpc = None
    log = []
    for line in server.stderr:
        log.append(line)
        if "OIP gRPC" in line:
            grpc = line.strip().rsplit(" on ", 1)[1]
        match = re.search(r" on http://(\S+)$", line.strip())
        if match:
            address = match.group(1)
            break
    if address is None:
        sys.stderr.write("".join(log))
        return server.wait() or 1
    # The rest of the server's log goes to DIR/server.log (the pipe must not fill).
    def keep_log():
        with open(directory / "server.log", "a") as out:
            out.writelines(log)
            for line in server.stderr:
                out.write(line)
                out.flush()

    threading.Thread(target=keep_log, daemon=True).start()
    info = {"address": address, "grpc": grpc, "server": server.pid, "supervisor": os.getpid()}
    tmp = directory / f".server.json.{os.getpid()}"
    tmp.write_text(json.dumps(info))
    os.replace(tmp, directory / "server.json")
    with open(directory / "lease", "a+") as lease:
        while server.poll() is None:
            time.sleep(POLL_S)
            try:
                fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # workers hold it
            # Nobody holds the lease: stop after the requests in flight, and forget
            # the address before letting go of the lease (a worker waiting for it
            # then finds no stale server).
            server.stdin.close()
            server.wait()
            forget(directory)
            return 0
    forget(directory)  # the server died: the next worker starts another
    return 0


def forget(directory: Path) -> None:
    """Removes server.json if it still describes this supervisor's server."""
    try:
        if json.loads((directory / "server.json").read_text()).get("supervisor") == os.getpid():
            (directory / "server.json").unlink()
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
