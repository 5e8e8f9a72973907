"""What the runinfer integrations share (Beam, Spark, Ray): a local `runinfer serve`
started, health-checked and restarted from Python, an Open Inference Protocol client
that sends a batch as one binary request, and the plugin's declaration as
`runinfer inspect` prints it.

* `RuninferServer`: a server owned by one process (it stops with it).
* `MachineServer`: one server per machine, shared by its worker processes (Spark
  executors' Python workers, Ray actors) and stopped when the last one is gone.
"""

import json
import os
import shutil
import subprocess
from typing import Any, Dict, Optional

from .machine import MachineServer
from .server import DATATYPES, RuninferError, RuninferServer

__all__ = ["MachineServer", "RuninferServer", "RuninferError", "DATATYPES", "default_binary", "inspect"]


def default_binary(binary: Optional[str] = None) -> str:
    """`binary`, else `$RUNINFER_BIN`, else `runinfer` on `PATH`."""
    return binary or os.environ.get("RUNINFER_BIN") or shutil.which("runinfer") or "runinfer"


def inspect(plugin: str, plugin_dir: str, binary: Optional[str] = None) -> Dict[str, Any]:
    """What `runinfer inspect PLUGIN` says: its batching, namespace, limits and the
    handler's signature (`["handler"]["signature"]`: inputs and outputs)."""
    out = subprocess.run([default_binary(binary), "inspect", plugin, "--plugins", plugin_dir], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuninferError(f"runinfer inspect {plugin}: {out.stderr.strip()}")
    return json.loads(out.stdout)
