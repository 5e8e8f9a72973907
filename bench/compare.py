"""P2, P3 and P6 of bench/RESULTS.md, run by bench/run.sh (which builds runinfer, installs
onnxruntime, fetches the models and writes the example files first).

P2: one job both ways: read a JSONL file of examples, run the model, write predictions
    as JSONL. Apache Beam's RunInference(OnnxModelHandlerNumpy) on its local runner
    (DirectRunner) against `runinfer run` with the generic onnx-tensor handler, on
    onnxruntime and on tract. Whole processes/pipelines, start-up included.
P3: process start to first prediction, with an empty and with a warm compile cache.
P6: peak and steady RSS of `runinfer run` with 1, 2 and 4 instances of one plugin on
    MiniLM, all running at once (sampled from /proc), and peak RSS (getrusage's
    ru_maxrss, from a small parent) of `runinfer serve` with 1 and with 4 plugins
    granting the same model file.

Prints Markdown.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import RunInference
from apache_beam.ml.inference.onnx_inference import OnnxModelHandlerNumpy
from apache_beam.options.pipeline_options import PipelineOptions
from soak import rss_kib

ROOT = Path(__file__).resolve().parent.parent
RUNINFER = ROOT / "target" / "release" / "runinfer"
DATA = ROOT / "target" / "bench" / "data"
# PP-OCR's export leaves height and width open, which tract plans best when fixed.
INPUT_SHAPES = {"ppocr-cls": "x = [-1, 3, 48, 192]"}
MODELS = {
    # name: (model file, numpy dtype of an example); onnx-tensor takes its signature
    # from the model.
    "iris": (ROOT / "plugins" / "iris" / "models" / "iris.onnx", np.float32),
    "ppocr-cls": (ROOT / "target" / "models" / "ppocr_cls.onnx", np.float32),
    "minilm": (ROOT / "target" / "models" / "minilm.onnx", np.int64),
}
BATCH = 32


def plugin_root(work, models, copies=1):
    """A plugin root with an onnx-tensor plugin per model (the model file hard-linked
    in), `copies` plugins each."""
    root = Path(work) / f"plugins-{'-'.join(models)}-{copies}"
    shutil.rmtree(root, ignore_errors=True)
    for name in models:
        path, _ = MODELS[name]
        for copy in range(copies):
            plugin = f"{name}-{copy}" if copies > 1 else name
            d = root / plugin
            d.mkdir(parents=True)
            shutil.copy(ROOT / "plugins" / "onnx-tensor" / "onnx-tensor.wasm", d)
            try:
                os.link(path, d / "model.onnx")
            except OSError:
                shutil.copy(path, d / "model.onnx")
            (d / "plugin.toml").write_text(
                f'name = "{plugin}"\ncomponent = "onnx-tensor.wasm"\n[models]\n'
                f'model = {{ path = "model.onnx", input_shapes = {{ {INPUT_SHAPES.get(name, "")} }} }}\n'
            )
    return root


def beam_pipeline(name, data, out_dir):
    """The Beam side of P2, in this process: returns the pipeline's own seconds.

    Each example is keyed by its input line, and the line is written back as the
    example: Beam writes what it parsed, as runinfer does, instead of a float32 round
    trip of the array (`.tolist()` of a PP-OCR line alone took ~16 ms an example).
    """
    from apache_beam.ml.inference.base import KeyedModelHandler

    path, dtype = MODELS[name]
    names = []

    def all_outputs(session, batch, inference_args=None):
        # Beam's default returns the first output only; iris has two.
        if not names:
            names.extend(o.name for o in session.get_outputs())
        outputs = session.run(None, {session.get_inputs()[0].name: np.stack(batch, axis=0)})
        return dict(zip(names, outputs))

    handler = OnnxModelHandlerNumpy(
        str(path),
        providers=["CPUExecutionProvider"],
        inference_fn=all_outputs,
        min_batch_size=BATCH,
        max_batch_size=BATCH,
    )

    def to_json(keyed):
        line, result = keyed
        inference = json.dumps({k: v.tolist() for k, v in result.inference.items()})
        return f'{{"example":{line},"inference":{inference}}}'

    start = time.perf_counter()
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        (
            p
            | beam.io.ReadFromText(str(data))
            | beam.Map(lambda line: (line.strip(), np.asarray(json.loads(line), dtype=dtype)))
            | RunInference(KeyedModelHandler(handler))
            | beam.Map(to_json)
            | beam.io.WriteToText(str(Path(out_dir) / "beam"), shard_name_template="")
        )
    return time.perf_counter() - start


def beam_job(name, data, out_dir):
    """Beam's P2 job as its own process, so that Python's start-up and `import
    apache_beam` are timed as runinfer's process start is: returns (lines, seconds
    with start-up, seconds of the pipeline alone)."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--beam-job", name, str(data), str(out_dir)],
        check=True,
        capture_output=True,
        text=True,
    )
    whole = time.perf_counter() - start
    pipeline = float(done.stdout.strip().splitlines()[-1])
    count = sum(1 for _ in open(Path(out_dir) / "beam"))
    return count, whole, pipeline


def runinfer_job(plugins, name, data, out_dir, backend, cache):
    """runinfer's P2 job: returns (lines, seconds of the process, seconds of the run
    after the plugin loaded, from its summary line). Batches are pinned to 32 like
    Beam's (min = max), so no batch is cut by the handler's wait."""
    out = Path(out_dir) / f"runinfer-{backend}"
    start = time.perf_counter()
    done = subprocess.run(
        [RUNINFER, "run", name, data, "--plugins", plugins, "--backend", backend, "--max-batch-size", str(BATCH),
         "--min-batch-size", str(BATCH), "--cache-dir", cache, "--output", out],
        check=True,
        capture_output=True,
        text=True,
    )
    whole = time.perf_counter() - start
    # "runinfer: N lines -> N predictions, ... in 0.123 s (...)"
    run_only = float(re.search(r" in ([\d.]+) s \(", done.stderr).group(1))
    count = sum(1 for _ in open(out))
    return count, whole, run_only


def agree(data, runinfer_out, beam_out, tolerance=1e-5):
    """Both sides' predictions agree on every line, within `tolerance`: runinfer's
    are in input order, Beam's are found by their example line."""
    beam_by_line = {}
    for line in open(beam_out):
        record = json.loads(line)
        beam_by_line[json.dumps(record["example"])] = record["inference"]
    inputs = [json.dumps(json.loads(line)) for line in open(data)]
    outputs = [json.loads(line)["inference"] for line in open(runinfer_out)]
    if len(outputs) != len(inputs):
        raise SystemExit(f"{runinfer_out}: {len(outputs)} predictions for {len(inputs)} lines")
    worst = 0.0
    for i, (example, ours) in enumerate(zip(inputs, outputs)):
        theirs = beam_by_line[example]
        # onnx-tensor writes a one-output model's inference as the tensor itself.
        if not isinstance(ours, dict) and len(theirs) == 1:
            ours = {next(iter(theirs)): ours}
        if sorted(ours) != sorted(theirs):
            raise SystemExit(f"line {i}: outputs {sorted(ours)} vs Beam's {sorted(theirs)}")
        for key in ours:
            a = np.asarray(ours[key], dtype=np.float64)
            b = np.asarray(theirs[key], dtype=np.float64)
            if a.shape != b.shape:
                raise SystemExit(f"line {i} {key}: shape {a.shape} vs Beam's {b.shape}")
            worst = max(worst, float(np.abs(a - b).max(initial=0.0)))
    if worst > tolerance:
        raise SystemExit(f"{runinfer_out} differs from Beam's predictions by {worst:.2e}")
    return worst


def p2(args, work):
    plugins = plugin_root(work, args.models)
    cache = Path(work) / "cache"
    print("### P2: the same job in Apache Beam and in runinfer\n")
    print(
        f"Read `target/bench/data/<model>.jsonl`, run the model in batches of exactly {BATCH}, write predictions (all "
        f"outputs) as JSONL, each with its example as it was read. Beam {beam.__version__}: `ReadFromText | "
        f"Map(line → (line, numpy)) | RunInference(KeyedModelHandler(OnnxModelHandlerNumpy), CPU provider, "
        f"onnxruntime's default threads) | Map(→ JSON) | WriteToText` on the DirectRunner, in its own Python process. "
        f"runinfer: `runinfer run --min-batch-size {BATCH} --max-batch-size {BATCH}` with the generic onnx-tensor "
        f"handler, its default instances ({os.cpu_count()}, 1 engine thread each), warm compile cache. Inference values: "
        f"Beam writes float32 outputs as doubles (`tolist`), runinfer in float32's shortest form. Every run's "
        f"predictions are checked against Beam's, line by line (max abs difference in the last column). examples/s, "
        f"median of {args.reps} interleaved runs: **whole** = the whole process (Python start-up and `import "
        f"apache_beam` for Beam, process start and plugin load for runinfer); **job** = the pipeline alone for Beam, "
        f"the run after the plugin loaded for runinfer.\n"
    )
    print(
        "| model | examples | Beam whole | Beam job | runinfer+ort whole | job | ratio whole / job "
        "| runinfer+tract whole | job | ratio whole / job | max diff |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.models:
        data = DATA / f"{name}.jsonl"
        lines = sum(1 for _ in open(data))
        rates = {k: ([], []) for k in ("beam", "onnxruntime", "tract")}
        worst = 0.0
        # One untimed runinfer start fills the compile cache.
        runinfer_job(plugins, name, data, work, "tract", cache)
        for _ in range(args.reps):
            for kind in rates:
                if kind == "beam":
                    count, whole, job = beam_job(name, data, work)
                else:
                    count, whole, job = runinfer_job(plugins, name, data, work, kind, cache)
                if count != lines:
                    raise SystemExit(f"{kind}: {count} predictions for {lines} lines")
                rates[kind][0].append(count / whole)
                rates[kind][1].append(count / job)
                print(f"  {name} {kind}: {count / whole:,.1f} ex/s whole, {count / job:,.1f} job", file=sys.stderr)
            for backend in ("onnxruntime", "tract"):
                worst = max(worst, agree(data, Path(work) / f"runinfer-{backend}", Path(work) / "beam"))
        m = {k: (statistics.median(w), statistics.median(j)) for k, (w, j) in rates.items()}
        b = m["beam"]
        cells = [f"{name}", f"{lines:,}", f"{b[0]:,.1f}", f"{b[1]:,.1f}"]
        for kind in ("onnxruntime", "tract"):
            w, j = m[kind]
            cells += [f"{w:,.1f}", f"{j:,.1f}", f"{w / b[0]:.2f} / {j / b[1]:.2f}"]
        cells.append(f"{worst:.1e}")
        print("| " + " | ".join(cells) + " |")
        sys.stdout.flush()


def first_prediction(command):
    """Seconds from process start to its first line on stdout; the process is then
    left to finish."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - start
    proc.stdout.read()
    assert proc.wait() == 0 and line, command
    return elapsed


def p3(args, work):
    plugins = plugin_root(work, ["iris", "ppocr-cls"])
    print("### P3: cold start\n")
    print(
        "`runinfer run <plugin> <one example>`: process start to the first prediction on stdout, with an empty "
        f"compile cache (Cranelift compiles the component) and with the cache warm; median of {args.reps}. "
        "Includes loading the model (and, for onnxruntime, its shared library).\n"
    )
    print("| plugin | engine | empty cache ms | warm cache ms |")
    print("|---|---|---:|---:|")
    for name in ["iris", "ppocr-cls"]:
        one = Path(work) / f"{name}-one.jsonl"
        with open(DATA / f"{name}.jsonl") as f:
            one.write_text(f.readline())
        for backend in ["tract", "onnxruntime"]:
            cold, warm = [], []
            for rep in range(args.reps):
                cache = Path(work) / f"cache-p3-{name}-{backend}-{rep}"
                command = [RUNINFER, "run", name, one, "--plugins", plugins, "--backend", backend, "--cache-dir", cache]
                cold.append(first_prediction(command) * 1e3)
                warm.append(first_prediction(command) * 1e3)
            print(f"| {name} | {backend} | {statistics.median(cold):.0f} | {statistics.median(warm):.0f} |")
            sys.stdout.flush()


# A child's ru_maxrss starts from what it shared with its parent at fork, and this
# process (with Beam loaded) is large: commands are started from a small interpreter
# that reports its only child's peak.
PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(code)\n"
)


def measured(command, report, **popen):
    return subprocess.Popen([sys.executable, "-c", PEAK_RSS, report, *map(str, command)], **popen)


def peak_rss_mb(proc, report):
    assert proc.wait() == 0, proc.args
    return int(Path(report).read_text()) / 1024


def sampled_rss_mb(command):
    """Peak and steady RSS (MB) of a command, from /proc every 50 ms: steady is the median of the last quarter
    (loading — tract's optimisation of MiniLM takes seconds — stays out of it)."""
    proc = subprocess.Popen(list(map(str, command)), stderr=subprocess.DEVNULL)
    samples = []
    while proc.poll() is None:
        try:
            kib = rss_kib(proc.pid)
        except FileNotFoundError:
            break
        if not kib:  # exiting: no memory left to report
            break
        samples.append(kib / 1024)
        time.sleep(0.05)
    assert proc.wait() == 0, proc.args
    assert len(samples) >= 4, f"{command}: ended before it could be sampled"
    last_quarter = samples[len(samples) * 3 // 4 :]
    return max(samples), statistics.median(last_quarter)


def serve_peak_rss(plugins, names, backend, cache, example, report):
    proc = measured(
        [RUNINFER, "serve", "--plugins", plugins, "--port", "0", "--backend", backend, "--cache-dir", cache,
         "--exit-on-stdin-eof", "--no-watch"],
        report,
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    address = None
    for line in proc.stderr:
        if "serving" in line and "http://" in line:
            address = line.strip().rsplit("http://", 1)[1]
            break
    assert address, "runinfer serve did not start"
    body = json.dumps(
        {"inputs": [{"name": "input", "shape": [1, len(example)], "datatype": "INT64", "data": example}]}
    ).encode()
    for name in names:
        request = urllib.request.Request(
            f"http://{address}/v2/models/{name}/infer", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=300) as response:
            assert response.status == 200
    proc.stdin.close()
    proc.stderr.read()
    return peak_rss_mb(proc, report)


def p6(args, work):
    name = "minilm"
    size = MODELS[name][0].stat().st_size / 1e6
    plugins = plugin_root(work, [name])
    cache = Path(work) / "cache"
    data = DATA / f"{name}.jsonl"
    print("### P6: memory\n")
    print(
        f"MiniLM ({size:.0f} MB file), median of {args.reps}. `run`: batches of 8, 128 lines an instance, every instance "
        "running at once (`--workers` = `--onnxruntime-sessions` = instances, so that each holds a session of its own "
        "on onnxruntime); the process's RSS sampled every 50 ms: its peak, and **steady** = the median of the last quarter "
        "of the run (the peak includes loading: reading the file, and each engine's parse of it). `serve`: peak RSS "
        "(getrusage ru_maxrss, from a small parent), plugins each granting a copy (hard link) of the same file, one "
        "request to each.\n"
    )
    print("| process | engine | peak RSS MB | steady RSS MB | steady MB per added instance |")
    print("|---|---|---:|---:|---:|")
    examples = [json.loads(line) for line in open(data)]
    report = Path(work) / "peak-rss"
    # Compile the component into the cache first: a run that compiles it spends most
    # of itself loading, and its "steady" half would measure that.
    subprocess.run(
        [RUNINFER, "run", name, data, "--plugins", plugins, "--cache-dir", cache, "--output", os.devnull],
        stderr=subprocess.DEVNULL,
        check=True,
    )
    for backend in ["tract", "onnxruntime"]:
        alone = None
        for instances in [1, 2, 4]:
            lines = Path(work) / f"p6-{instances}.jsonl"
            with open(lines, "w") as f:
                for i in range(128 * instances):
                    f.write(json.dumps(examples[i % len(examples)]) + "\n")
            concurrency = ["--workers", str(instances), "--onnxruntime-sessions", str(instances)]
            peaks, steadies = [], []
            for _ in range(args.reps):
                peak, steady = sampled_rss_mb(
                    [RUNINFER, "run", name, lines, "--plugins", plugins, "--backend", backend, "--cache-dir", cache,
                     "--instances", str(instances), *concurrency, "--max-batch-size", "8", "--output", os.devnull]
                )
                peaks.append(peak)
                steadies.append(steady)
            peak, steady = statistics.median(peaks), statistics.median(steadies)
            alone = steady if alone is None else alone
            added = "" if instances == 1 else f"{(steady - alone) / (instances - 1):.1f}"
            print(
                f"| `run`, {instances} instance{'s' if instances > 1 else ''} | {backend} | {peak:.0f} | {steady:.0f} | {added} |"
            )
            sys.stdout.flush()
        for copies in [1, 4]:
            shared = plugin_root(work, [name], copies)
            names = [f"{name}-{c}" for c in range(copies)] if copies > 1 else [name]
            peaks = [serve_peak_rss(shared, names, backend, cache, examples[0], report) for _ in range(args.reps)]
            what = "1 plugin" if copies == 1 else f"{copies} plugins, one model file"
            print(f"| `serve`, {what} | {backend} | {statistics.median(peaks):.0f} | | |")
            sys.stdout.flush()


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--beam-job":
        print(beam_pipeline(sys.argv[2], sys.argv[3], sys.argv[4]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS), help="P2's models, comma-separated")
    parser.add_argument("parts", nargs="*", default=["p2", "p3", "p6"])
    args = parser.parse_args()
    args.models = [m for m in args.models.split(",") if m]
    unknown = set(args.models) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)} (known: {', '.join(MODELS)})")
    with tempfile.TemporaryDirectory() as work:
        for part in args.parts:
            {"p2": p2, "p3": p3, "p6": p6}[part](args, work)
            print()


if __name__ == "__main__":
    main()
