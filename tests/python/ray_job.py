"""Ray end to end: a local cluster of a head and a second node (`ray start` on
loopback, one CPU each), runinfer plugins through `Dataset.map_batches` with
`RuninferPredictor` on an actor pool of two, every prediction checked against the
golden files; then the node's server is killed mid-job, started again by the actors,
and the job completes; after `ray stop` no server is left.

    usage: python ray_job.py REPO_ROOT RUNINFER_BINARY PLUGIN_ROOT MACHINE_DIR
"""

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(sys.argv[1])
sys.path.insert(0, str(ROOT / "integrations" / "client"))
sys.path.insert(0, str(ROOT / "integrations" / "ray"))
sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
from checks import check, check_iris, check_mlp, golden  # noqa: E402
from scale_common import Killer, servers, wait_gone  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_cli(*args, env):
    ray = Path(sys.executable).parent / "ray"
    out = subprocess.run([str(ray), *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"ray {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")


def own_ports():
    """Free ports for one node's services: two nodes on one machine (and other tests)
    must not meet on Ray's default ports."""
    names = ["node-manager-port", "object-manager-port", "metrics-export-port", "runtime-env-agent-port",
             "dashboard-agent-listen-port", "dashboard-agent-grpc-port"]
    return [f"--{name}={free_port()}" for name in names]


class SlowPredictor:
    """RuninferPredictor, 50 ms slower a batch: a job long enough to kill its server
    in the middle of."""

    def __init__(self, **kwargs):
        from runinfer_ray import RuninferPredictor

        self.inner = RuninferPredictor(**kwargs)

    def __call__(self, batch):
        import time

        time.sleep(0.05)
        return self.inner(batch)


def main():
    _, binary, plugins, machine = sys.argv[1:5]
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray-")
    # Ray keeps state in ~/.ray (an auth token a local `ray.init` may have written):
    # this cluster's nodes and driver get a home of their own.
    os.environ["HOME"] = tempfile.mkdtemp(prefix="ray-home-")
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONPATH": f"{ROOT / 'integrations' / 'client'}:{ROOT / 'integrations' / 'ray'}:{Path(__file__).parent}",
        "RUNINFER_MACHINE_DIR": machine,
    }
    common = ["--num-cpus=1", "--disable-usage-stats", f"--temp-dir={temp}"]
    ray_cli("start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
            *own_ports(), *common, env=env)
    pids = set()
    try:
        ray_cli("start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1", *own_ports(), *common, env=env)
        import ray
        from runinfer_ray import RuninferPredictor

        ray.init(address=f"127.0.0.1:{port}", runtime_env={"env_vars": {"RUNINFER_MACHINE_DIR": machine, "PYTHONPATH": env["PYTHONPATH"]}})
        check(len([n for n in ray.nodes() if n["Alive"]]) == 2, f"two nodes: {ray.nodes()}")
        ray.data.DataContext.get_current().enable_progress_bars = False

        iris = golden(ROOT, "iris.jsonl")
        ds = ray.data.from_items([{"id": i, "features": np.array(g["example"], dtype=np.float32)} for i, g in enumerate(iris)])
        kwargs = {"plugin": "iris", "columns": ["features"], "plugin_dir": plugins, "binary": binary}
        out = ds.map_batches(RuninferPredictor, fn_constructor_kwargs=kwargs, compute=ray.data.ActorPoolStrategy(size=2), batch_size=16, batch_format="numpy")
        rows = sorted(out.take_all(), key=lambda r: r["id"])
        check(len(rows) == 150, f"{len(rows)} rows")
        check_iris([r["label"] for r in rows], [r["probabilities"] for r in rows], iris, "ray iris")
        check(all(r["model_id"].startswith("models/iris.onnx@") for r in rows), "model ids")
        pids |= {s["server"] for s in servers(machine)}
        print("ray iris: 150 rows through map_batches match the golden labels and probabilities")

        mlp = golden(ROOT, "tiny_mlp.jsonl")
        ds = ray.data.from_items([{"id": i, "x": np.array(g["example"], dtype=np.float32)} for i, g in enumerate(mlp)])
        kwargs = {"plugin": "onnx-tensor", "columns": ["x"], "plugin_dir": plugins, "binary": binary}
        out = ds.map_batches(RuninferPredictor, fn_constructor_kwargs=kwargs, compute=ray.data.ActorPoolStrategy(size=2), batch_size=8, batch_format="numpy")
        rows = sorted(out.take_all(), key=lambda r: r["id"])
        check_mlp([r["logits"] for r in rows], [r["hidden"] for r in rows], mlp, "ray onnx-tensor")
        print(f"ray onnx-tensor: {len(mlp)} rows ([2, 3] each) match the golden logits and hidden states")

        killer = Killer(machine, "iris", after=20)
        killer.start()
        ds = ray.data.from_items([{"id": i, "features": np.array(g["example"], dtype=np.float32)} for i, g in enumerate(iris)])
        kwargs = {"plugin": "iris", "columns": ["features"], "plugin_dir": plugins, "binary": binary}
        out = ds.map_batches(SlowPredictor, fn_constructor_kwargs=kwargs, compute=ray.data.ActorPoolStrategy(size=2), batch_size=5, batch_format="numpy")
        rows = sorted(out.take_all(), key=lambda r: r["id"])
        killer.join(timeout=5)
        check(killer.killed is not None, "the server was not killed during the job")
        check_iris([r["label"] for r in rows], [r["probabilities"] for r in rows], iris, "ray iris after a kill")
        after = servers(machine)
        check(after and all(s["server"] != killer.killed["server"] for s in after), f"a new server serves: {after}")
        pids |= {s["server"] for s in after} | {s["supervisor"] for s in after}
        print(f"ray kill: server {killer.killed['server']} killed mid-job, {after[0]['server']} started, 150 rows match")
        ray.shutdown()
    finally:
        ray_cli("stop", "--force", env=env)
    wait_gone(machine, pids)
    print("ray stopped: no runinfer server left")
    print("ok")


if __name__ == "__main__":
    main()
