"""Models from object storage: how long a plugin takes to start when its model is in
S3 (moto's S3 server on loopback) — first start with an empty model cache (download
+ load), a restart with the cache warm — next to the same model as a file of the
plugin. Each figure is the median of `--reps` runs of `runinfer run PLUGIN` on an
empty input (start, fetch, compile from the warm compile cache, load the model,
first instance, exit), in one run, so the ratios hold on a noisy machine.

Usage: model_store.py RUNINFER_BINARY [--reps N]   (bench/model_store.sh sets it up)
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    # name: (file, input shapes for tract)
    "ppocr-cls": (ROOT / "target" / "models" / "ppocr_cls.onnx", "x = [-1, 3, 48, 192]"),
    "ppocr-det": (ROOT / "target" / "models" / "ppocr_det.onnx", "x = [1, 3, 640, 640]"),
    "minilm": (ROOT / "target" / "models" / "minilm.onnx", ""),
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plugin(root, name, model_path, shapes):
    d = root / name
    d.mkdir(parents=True)
    shutil.copy(ROOT / "plugins" / "onnx-tensor" / "onnx-tensor.wasm", d)
    (d / "plugin.toml").write_text(
        f'name = "{name}"\ncomponent = "onnx-tensor.wasm"\n[models]\n'
        f'model = {{ path = "{model_path}", input_shapes = {{ {shapes} }} }}\n'
    )
    return d


def timed(command, env):
    start = time.perf_counter()
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"{' '.join(map(str, command))} failed:\n{out.stderr}")
    return took * 1e3


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="runinfer-bench-stores-"))
    port = free_port()
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench",
               AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1")
    try:
        deadline = time.monotonic() + 60
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            if time.monotonic() > deadline:
                sys.exit("moto never listened")
            time.sleep(0.05)
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench",
                          region_name="us-east-1")
        s3.create_bucket(Bucket="models")
        plugins = work / "plugins"
        empty = work / "empty.jsonl"
        empty.write_text("")
        compile_cache = work / "compile"
        print("| model | size (MB) | file of the plugin (ms) | S3, cache empty (ms) | S3, cache warm (ms) | download (MB/s) | cold ÷ file | warm ÷ file |")
        print("|---|---|---|---|---|---|---|---|")
        for name, (path, shapes) in MODELS.items():
            s3.upload_file(str(path), "models", f"{name}.onnx")
            local = plugin(plugins, f"{name}-file", "model.onnx", shapes)
            shutil.copy(path, local / "model.onnx")
            plugin(plugins, f"{name}-s3", f"s3://models/{name}.onnx", shapes)

            def run(which, cache):
                return timed([args.binary, "run", which, empty, "--plugins", plugins, "--cache-dir", compile_cache,
                              "--model-cache-dir", cache], env)

            warm_cache = work / f"cache-{name}"
            run(f"{name}-file", warm_cache)  # compiles the component once: every run below reuses it
            run(f"{name}-s3", warm_cache)
            files, cold, warm = [], [], []
            for rep in range(args.reps):
                files.append(run(f"{name}-file", warm_cache))
                fresh = work / f"cache-{name}-{rep}"
                cold.append(run(f"{name}-s3", fresh))
                shutil.rmtree(fresh)
                warm.append(run(f"{name}-s3", warm_cache))
            f, c, w = (statistics.median(x) for x in (files, cold, warm))
            size = path.stat().st_size / 1e6
            rate = size / max((c - w) / 1e3, 1e-3)
            print(f"| {name} | {size:.1f} | {f:.0f} | {c:.0f} | {w:.0f} | {rate:.0f} | {c / f:.2f} | {w / f:.2f} |")
    finally:
        moto.kill()
        moto.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
