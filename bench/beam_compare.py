"""Beam's local runner, one pipeline two ways: Create(examples) | RunInference(handler)
| count, with RuninferModelHandler("iris") and with OnnxModelHandlerNumpy on the same
ONNX file. Run by bench/beam.sh."""

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import RunInference
from apache_beam.ml.inference.onnx_inference import OnnxModelHandlerNumpy
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "integrations" / "beam"))
sys.path.insert(0, str(ROOT / "integrations" / "client"))
from runinfer_beam import RuninferModelHandler  # noqa: E402

MODEL = ROOT / "plugins" / "iris" / "models" / "iris.onnx"


def run(handler, examples):
    start = time.perf_counter()
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        count = p | beam.Create(examples) | RunInference(handler) | beam.combiners.Count.Globally()
        assert_that(count, equal_to([len(examples)]))
    return len(examples) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=50_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    examples = list(rng.uniform([4, 2, 1, 0.1], [8, 4.5, 7, 2.5], size=(args.examples, 4)).astype(np.float32))
    batch = {"min_batch_size": 32, "max_batch_size": 32}
    handlers = {
        "OnnxModelHandlerNumpy (onnxruntime in the worker)": lambda: OnnxModelHandlerNumpy(str(MODEL), **batch),
        "RuninferModelHandler (runinfer serve, wasm handler, tract)": lambda: RuninferModelHandler(
            "iris", plugin_dir=str(ROOT / "plugins"), binary=str(ROOT / "target" / "release" / "runinfer"), **batch
        ),
    }
    rates = {name: [] for name in handlers}
    for _ in range(args.reps):  # interleaved, so drift hits both alike
        for name, make in handlers.items():
            rates[name].append(run(make(), examples))
            print(f"{name}: {rates[name][-1]:,.0f} examples/s", file=sys.stderr)
    medians = {name: statistics.median(r) for name, r in rates.items()}
    onnx, runinfer = list(medians.values())
    print(
        f"`bench/beam.sh --examples {args.examples} --reps {args.reps}` on {platform.node()}, {os.cpu_count()} cores; "
        f"apache-beam {beam.__version__}, DirectRunner, batches of 32, iris MLP; whole pipeline "
        f"(start-up included), median of {args.reps}.\n"
    )
    print("| handler | examples/s |")
    print("|---|---:|")
    for name, rate in medians.items():
        print(f"| {name} | {rate:,.0f} |")
    print(f"| ratio runinfer / Beam's ONNX handler | {runinfer / onnx:.2f} |")


if __name__ == "__main__":
    main()
