"""OCR two ways on the same images, side by side in one run (bench/ocr.sh):

* `runinfer run ocr` (image decoding and PP-OCR's pre- and post-processing in the wasm
  handler, the three models in onnxruntime in the host), the whole command, start-up
  included;
* rapidocr-onnxruntime 1.4.4's Python pipeline (OpenCV, pyclipper, numpy around
  onnxruntime), one image after another in one process, as its users call it.

The images are tests/python/ocr_images.py's (pages of a few lines, some tilted or
upside down, PNG and JPEG). Both use every core (runinfer: one instance per core, one
onnxruntime thread each; rapidocr: onnxruntime's default threads). Alternated
`--reps` times; medians. Also prints the share of runinfer's CPU time spent in the
handler vs the engine (its runinfer_tenant_*_cpu_seconds_total metrics).
"""

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "python"))

from ocr_images import images  # noqa: E402


def rapidocr(pictures):
    from rapidocr_onnxruntime import RapidOCR

    start = time.perf_counter()
    engine = RapidOCR()
    lines = 0
    for data in pictures:
        result, _ = engine(data)
        lines += len(result or [])
    return len(pictures) / (time.perf_counter() - start), lines


def runinfer(binary, path, n, work, shares):
    metrics = work / "metrics.txt"
    start = time.perf_counter()
    out = subprocess.run([str(binary), "run", "ocr", str(path), "--plugins", str(ROOT / "plugins"),
                          "--output", str(work / "out.jsonl"), "--metrics-out", str(metrics)],
                         capture_output=True, text=True)
    rate = n / (time.perf_counter() - start)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    rows = [json.loads(line) for line in open(work / "out.jsonl")]
    assert len(rows) == n, f"{len(rows)} predictions for {n} images"
    values = {}
    for line in metrics.read_text().splitlines():
        if line.startswith("runinfer_tenant_") and 'tenant="ocr"' in line:
            name, value = line.rsplit(" ", 1)
            values[name.split("{")[0]] = float(value)
    shares.append((values["runinfer_tenant_handler_cpu_seconds_total"],
                   values["runinfer_tenant_engine_cpu_seconds_total"]))
    return rate, sum(len(r["inference"]["lines"]) for r in rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--binary", default=str(ROOT / "target" / "release" / "runinfer"))
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="runinfer-ocr-bench-"))
    pictures = [data for data, _, _ in images(args.images)]
    path = work / "images.jsonl"
    path.write_text("".join(json.dumps(base64.b64encode(d).decode()) + "\n" for d in pictures))
    shares = []
    # Warm: the component compiled into the cache, files in the page cache.
    runinfer(args.binary, path, len(pictures), work, shares)
    shares.clear()
    rates = {"runinfer run ocr": [], "rapidocr-onnxruntime 1.4.4 (Python)": []}
    found = {}
    for _ in range(args.reps):
        rate, found["runinfer run ocr"] = runinfer(args.binary, path, len(pictures), work, shares)
        rates["runinfer run ocr"].append(rate)
        rate, found["rapidocr-onnxruntime 1.4.4 (Python)"] = rapidocr(pictures)
        rates["rapidocr-onnxruntime 1.4.4 (Python)"].append(rate)
        print({k: round(v[-1], 2) for k, v in rates.items()}, file=sys.stderr, flush=True)
    medians = {k: statistics.median(v) for k, v in rates.items()}
    handler, engine = (statistics.median(s[i] for s in shares) for i in (0, 1))
    ours = medians["runinfer run ocr"]
    print(f"{args.images} images (tests/python/ocr_images.py), {os.cpu_count()} cores, medians of "
          f"{args.reps} alternating runs (whole runs, start-up included).\n")
    print("| pipeline | images/s | lines found | runinfer ÷ it |")
    print("|---|---:|---:|---:|")
    for name, rate in medians.items():
        print(f"| {name} | {rate:,.2f} | {found[name]} | {ours / rate:.2f}× |")
    print(f"\nruninfer CPU: handler (decoding, resizing, DB post-processing, crops, CTC in wasm) "
          f"{handler:.2f} s, engine (onnxruntime, three models) {engine:.2f} s: "
          f"{100 * handler / (handler + engine):.1f} % in the guest.")


if __name__ == "__main__":
    main()
