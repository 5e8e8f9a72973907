"""Sentence embeddings three ways, side by side in one run (bench/text_embed.sh):

* `runinfer run text-embed` (the tokenizer and pooling in the wasm handler, the
  transformer in onnxruntime in the host), the whole command, start-up included;
* the Python reference pipeline: `tokenizers` + onnxruntime + numpy pooling in one
  process, batches of 16;
* Beam RunInference (DirectRunner) with a ModelHandler doing the same Python
  pre- and post-processing around onnxruntime, batches of 16.

All three embed the same texts with the same model and tokenizer files and use every
core (runinfer: one instance per core, one onnxruntime thread each; Python:
onnxruntime's default threads). Alternated `--reps` times; medians. Also prints the
share of runinfer's CPU time spent in the handler vs the engine (its
runinfer_tenant_*_cpu_seconds_total metrics).
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
import onnxruntime as ort
from apache_beam.ml.inference.base import ModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "plugins" / "text-embed"
WORDS = ("the a model handler runs inside sandboxes while tokenizers split words into pieces "
         "and engines compute embeddings of sentences for search ranking clustering café "
         "naïve résumé quickly slowly because data pipelines need fast inference").split()


def corpus(n):
    rng = random.Random(3)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randrange(6, 40))).capitalize() + "."
            for _ in range(n)]


def load():
    tokenizer = Tokenizer.from_file(str(PLUGIN / "tokenizer" / "tokenizer.json"))
    tokenizer.enable_truncation(256)
    tokenizer.enable_padding()
    session = ort.InferenceSession(str(PLUGIN / "models" / "minilm3.onnx"))
    return tokenizer, session


def embed(tokenizer, session, texts):
    encodings = tokenizer.encode_batch(texts)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    hidden = session.run(["last_hidden_state"], {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": mask,
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)})[0]
    m = mask[:, :, None].astype(np.float32)
    pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
    return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)


def python_reference(texts, batch=16):
    start = time.perf_counter()
    tokenizer, session = load()
    out = [embed(tokenizer, session, texts[i:i + batch]) for i in range(0, len(texts), batch)]
    assert sum(len(o) for o in out) == len(texts)
    return len(texts) / (time.perf_counter() - start)


class Loaded:
    """The model Beam shares between threads (it must be weak-referenceable)."""

    def __init__(self):
        self.tokenizer, self.session = load()


class EmbedHandler(ModelHandler):
    """What a Beam user writes today: Python tokenizer and pooling around onnxruntime."""

    def load_model(self):
        return Loaded()

    def run_inference(self, batch, model, inference_args=None):
        return list(embed(model.tokenizer, model.session, list(batch)))

    def batch_elements_kwargs(self):
        return {"min_batch_size": 16, "max_batch_size": 16}


def beam_pipeline(texts):
    start = time.perf_counter()
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        _ = p | beam.Create(texts) | RunInference(EmbedHandler()) | beam.combiners.Count.Globally()
    return len(texts) / (time.perf_counter() - start)


def runinfer(binary, texts_path, n, work, shares):
    metrics = work / "metrics.txt"
    start = time.perf_counter()
    out = subprocess.run([str(binary), "run", "text-embed", str(texts_path), "--plugins", str(ROOT / "plugins"),
                          "--output", str(work / "out.jsonl"), "--metrics-out", str(metrics)],
                         capture_output=True, text=True)
    rate = n / (time.perf_counter() - start)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    lines = sum(1 for _ in open(work / "out.jsonl"))
    assert lines == n, f"{lines} predictions for {n} texts"
    values = {}
    for line in metrics.read_text().splitlines():
        if line.startswith("runinfer_tenant_") and 'tenant="text-embed"' in line:
            name, value = line.rsplit(" ", 1)
            values[name.split("{")[0]] = float(value)
    shares.append((values["runinfer_tenant_handler_cpu_seconds_total"],
                   values["runinfer_tenant_engine_cpu_seconds_total"]))
    return rate


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--binary", default=str(ROOT / "target" / "release" / "runinfer"))
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="runinfer-embed-bench-"))
    texts = corpus(args.texts)
    texts_path = work / "texts.jsonl"
    texts_path.write_text("".join(json.dumps(t) + "\n" for t in texts))
    # Warm: the component compiled into the cache, files in the page cache.
    shares = []
    runinfer(args.binary, texts_path, len(texts), work, shares)
    shares.clear()
    rates = {"runinfer run text-embed": [], "Python tokenizers + onnxruntime": [],
             "Beam RunInference (same Python pre/post-processing)": []}
    for _ in range(args.reps):
        rates["runinfer run text-embed"].append(runinfer(args.binary, texts_path, len(texts), work, shares))
        rates["Python tokenizers + onnxruntime"].append(python_reference(texts))
        rates["Beam RunInference (same Python pre/post-processing)"].append(beam_pipeline(texts))
        print({k: round(v[-1], 1) for k, v in rates.items()}, file=sys.stderr, flush=True)
    medians = {k: statistics.median(v) for k, v in rates.items()}
    handler, engine = (statistics.median(s[i] for s in shares) for i in (0, 1))
    ours = medians["runinfer run text-embed"]
    print(f"{args.texts} texts of 6–40 words, {os.cpu_count()} cores, medians of {args.reps} "
          f"alternating runs (whole runs, start-up included).\n")
    print("| pipeline | texts/s | runinfer ÷ it |")
    print("|---|---:|---:|")
    for name, rate in medians.items():
        print(f"| {name} | {rate:,.1f} | {ours / rate:.2f}× |")
    print(f"\nruninfer CPU: handler (tokenizer, tensors, pooling in wasm) {handler:.2f} s, "
          f"engine (onnxruntime) {engine:.2f} s: {100 * handler / (handler + engine):.1f} % in the guest.")


if __name__ == "__main__":
    main()
