"""plugins/ocr against the reference users would otherwise run, rapidocr-onnxruntime
1.4.4 (the same three PP-OCR models, its own OpenCV pre- and post-processing), on
images of known text rendered by ocr_images.py: pages in varied sizes and fonts, some
lines tilted, some pages upside down, a thin single line, a page wider than 2000
pixels; PNG and JPEG.

`runinfer run ocr` (the real binary) reads every image; its lines must equal
rapidocr's on >= 95 % of lines (same text, boxes within a few pixels) and the known
text on >= 90 % (compared after NFKC and without spaces: PP-OCR's Chinese-English
recogniser often drops the space between Latin words, and rapidocr with it). Then
`runinfer serve` answers tritonclient's BYTES requests with the same lines, and
broken images end as dead letters with the reason.

Usage: ocr.py REPO_ROOT RUNINFER_BINARY [COUNT]
"""

import base64
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import unicodedata
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from checks import check, served
from ocr_images import images


def plugin_root(root, work):
    models = Path(subprocess.run([str(root / "scripts" / "fetch-models.sh"), "ppocr"], check=True,
                                 capture_output=True, text=True).stdout.strip())
    subprocess.run([str(root / "scripts" / "install-onnxruntime.sh")], check=True, capture_output=True)
    d = work / "plugins" / "ocr"
    (d / "models").mkdir(parents=True)
    (d / "dict").mkdir()
    shutil.copy(root / "plugins" / "ocr" / "ocr.wasm", d)
    shutil.copy(root / "plugins" / "ocr" / "plugin.toml", d)
    for model in ("det", "cls", "rec"):
        shutil.copy(models / f"ppocr_{model}.onnx", d / "models")
    shutil.copy(models / "ppocr_keys.txt", d / "dict")
    return work / "plugins"


def run(binary, plugins, lines, work):
    path = work / "images.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    dead = work / "dead.jsonl"
    dead.unlink(missing_ok=True)
    out = subprocess.run([str(binary), "run", "ocr", str(path), "--plugins", str(plugins),
                          "--dead-letters", str(dead)], capture_output=True, text=True)
    check(out.returncode == 0, f"runinfer run failed: {out.stderr}")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    dead = [json.loads(line) for line in dead.read_text().splitlines()] if dead.exists() else []
    return rows, dead


def normal(text):
    return "".join(unicodedata.normalize("NFKC", text).split())


def center(corners):
    return np.asarray(corners, dtype=np.float64).mean(axis=0)


def compare(ours, theirs):
    """Lines of one image read alike: (same, total, corner distances of the pairs)."""
    pending = list(theirs)
    same, distances = 0, []
    for line in ours:
        match = next((t for t in pending if t["text"] == line["text"]
                      and np.linalg.norm(center(t["box"]) - center(line["box"])) < 12), None)
        if match is not None:
            pending.remove(match)
            same += 1
            distances.append(np.abs(np.asarray(match["box"]) - np.asarray(line["box"])).max())
    return same, max(len(ours), len(theirs)), distances


def huge_png(width, height):
    """A valid PNG signature and header declaring a huge image, then no pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(header)) + b"IHDR" + header + struct.pack(">I", zlib.crc32(b"IHDR" + header))
    return b"\x89PNG\r\n\x1a\n" + chunk


def serve_lines(binary, plugins, pictures):
    import tritonclient.http as httpclient

    with served(binary, plugins) as address:
        client = httpclient.InferenceServerClient(address)
        output = client.get_model_metadata("ocr")["outputs"][0]["name"]
        request = httpclient.InferInput("input", [len(pictures)], "BYTES")
        request.set_data_from_numpy(np.array(pictures, dtype=object))
        result = client.infer("ocr", [request]).as_numpy(output)
        return [json.loads(r) for r in result]


def main():
    root, binary = Path(sys.argv[1]), Path(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 24
    work = Path(tempfile.mkdtemp(prefix="runinfer-ocr-"))
    try:
        from rapidocr_onnxruntime import RapidOCR

        plugins = plugin_root(root, work)
        corpus = images(count)
        encoded = [json.dumps(base64.b64encode(data).decode()) for data, _, _ in corpus]
        rows, dead = run(binary, plugins, encoded, work)
        check(not dead, f"dead letters: {str(dead)[:500]}")
        check(len(rows) == len(corpus), f"{len(rows)} predictions for {len(corpus)} images")
        check([json.dumps(r["example"]) for r in rows] == encoded, "predictions in input order")

        engine = RapidOCR()
        same = total = known_read = known = 0
        distances, worst = [], []
        for (data, fmt, text), row in zip(corpus, rows):
            ours = row["inference"]["lines"]
            result, _ = engine(data)
            theirs = [{"box": box, "text": t, "score": s} for box, t, s in (result or [])]
            s, t, d = compare(ours, theirs)
            same, total, distances = same + s, total + t, distances + d
            if s < t:
                worst.append(([o["text"] for o in ours], [o["text"] for o in theirs]))
            read = Counter(normal(line["text"]) for line in ours)
            for line in text:
                known += 1
                if read[normal(line)] > 0:
                    read[normal(line)] -= 1
                    known_read += 1
            check(all(0.5 <= line["score"] <= 1 for line in ours), f"scores {ours}")
        print(f"lines equal to rapidocr's: {same}/{total} ({same / total:.1%}); "
              f"box corners within {max(distances):.1f} px (mean {np.mean(distances):.2f})")
        print(f"known text read: {known_read}/{known} ({known_read / known:.1%})")
        check(same >= 0.95 * total, f"only {same}/{total} lines equal rapidocr's: {worst[:4]}")
        check(known_read >= 0.90 * known, f"only {known_read}/{known} known lines read")
        check(max(distances) <= 4, f"box corners {max(distances)} px from rapidocr's")

        # Served: the images as BYTES through tritonclient, the same lines as `run`.
        pictures = [data for data, _, _ in corpus[:3]]
        served = serve_lines(binary, plugins, pictures)
        check(served == [r["inference"] for r in rows[:3]], f"served {served} vs run {rows[:3]}")
        print("served over OIP: the same lines for 3 images in one request")

        # Broken images: each ends as a dead letter with the reason.
        png = next(data for data, fmt, _ in corpus if fmt == "PNG")
        jpeg = next(data for data, fmt, _ in corpus if fmt == "JPEG")
        broken = [json.dumps(base64.b64encode(b).decode()) for b in (
            b"not an image at all",
            png[: len(png) // 2],  # truncated
            jpeg[: len(jpeg) // 2],
            huge_png(100_000, 100_000),
        )]
        rows, dead = run(binary, plugins, broken, work)
        check(not rows and len(dead) == len(broken), f"{len(rows)} predictions, {len(dead)} dead letters")
        # Batched together, each is refused alone, with its own reason.
        reasons = [d["error"]["message"] for d in sorted(dead, key=lambda d: d["line"])]
        for reason, wanted in zip(reasons, ["not a PNG or JPEG", "cannot decode", "truncated",
                                            "too large"]):
            check(wanted in reason, f"expected `{wanted}` in {reason!r}")
        print(f"broken images dead-lettered: {[str(r)[:80] for r in reasons]}")
        print("ok")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
