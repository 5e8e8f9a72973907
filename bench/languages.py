"""Run by bench/languages.sh. Standard library only."""

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "release" / "runinfer"
PLUGINS = {
    "Rust": "iris",
    "Python": "iris-py",
    "JavaScript": "iris-js",
    "C": "iris-c",
    "Go": "iris-go",
    "Zig": "iris-zig",
}


def run(plugin, input_path, cache, extra=()):
    """Wall time of one `runinfer run` and its lines/s."""
    start = time.perf_counter()
    out = subprocess.run(
        [str(BINARY), "run", plugin, str(input_path), "--output", os.devnull, "--cache-dir", str(cache), *extra],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    wall = time.perf_counter() - start
    rate = float(re.search(r"\((\d+) lines/s\)", out.stderr).group(1))
    return wall, rate


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=60_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    examples = (ROOT / "examples" / "iris.jsonl").read_text().splitlines()
    work = Path(tempfile.mkdtemp(prefix="runinfer-languages-"))
    one = work / "one.jsonl"
    one.write_text(examples[0] + "\n")
    many = work / "many.jsonl"
    many.write_text("\n".join(examples[i % len(examples)] for i in range(args.lines)) + "\n")
    rows = {}
    for language, plugin in PLUGINS.items():
        component = ROOT / "plugins" / plugin / f"{plugin}.wasm"
        if not component.exists():
            continue
        cold, warm, rates = [], [], []
        for rep in range(args.reps):
            cache = work / f"cache-{plugin}-{rep}"
            cold.append(run(plugin, one, cache)[0])       # compiles, fills the cache
            warm.append(run(plugin, one, cache)[0])       # loads from the cache
            rates.append(run(plugin, many, cache, ["--max-batch-size", str(args.batch)])[1])
        rows[language] = (component.stat().st_size, statistics.median(cold), statistics.median(warm), statistics.median(rates))
    shutil.rmtree(work)
    rust_rate = rows["Rust"][3]
    print(
        f"`bench/languages.sh --lines {args.lines} --reps {args.reps} --batch {args.batch}` on {platform.node()}, "
        f"{os.cpu_count()} cores; release build; first prediction = wall time of `runinfer run` on one line "
        f"(process start to exit); throughput = `runinfer run` on {args.lines:,} lines at batch {args.batch}; medians of {args.reps}.\n"
    )
    print("| handler | component | first prediction, cold cache | first prediction, warm cache | examples/s | vs Rust |")
    print("|---|---:|---:|---:|---:|---:|")
    for language, (size, cold, warm, rate) in rows.items():
        print(f"| {language} | {size / 1e6:.2f} MB | {cold * 1e3:,.0f} ms | {warm * 1e3:,.0f} ms | {rate:,.0f} | {rate / rust_rate:.2f} |")


if __name__ == "__main__":
    main()
