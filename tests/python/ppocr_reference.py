"""Independent reference for the PP-OCR classifier test: real text lines rendered with
Pillow and a DejaVu font, half of them turned by 180°, preprocessed as PP-OCR feeds its
direction classifier (resize to height 48 keeping the aspect ratio, pad the width to
192, scale to [-1, 1]), then run by onnxruntime's own Python API (no runinfer code).

Usage: ppocr_reference.py MODEL OUT_JSONL
Writes one image a line to OUT_JSONL (a [3, 48, 192] array) and prints, for each, a
JSON object {"turned": bool, "probabilities": [p0, p1]}.
"""

import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
LINES = [
    "The quick brown fox jumps",
    "runinfer serves handlers",
    "Invoice 2026-12-01 total 42.50",
    "Hello, world",
    "WebAssembly components",
]


def render(text, size):
    try:
        font = ImageFont.truetype(FONT, size)
    except OSError as e:
        raise SystemExit(f"{FONT}: {e} (Debian's fonts-dejavu-core package ships it)")
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("RGB", (right - left + 16, bottom - top + 12), "white")
    ImageDraw.Draw(image).text((8 - left, 6 - top), text, font=font, fill="black")
    return image


def preprocess(image):
    """PP-OCR's classifier input: height 48, width scaled and padded to 192."""
    height, width = 48, 192
    scaled = min(width, int(np.ceil(height * image.width / image.height)))
    x = np.asarray(image.resize((scaled, height), Image.BILINEAR), dtype=np.float32) / 255.0
    x = (x - 0.5) / 0.5
    out = np.zeros((3, height, width), dtype=np.float32)
    out[:, :, :scaled] = x.transpose(2, 0, 1)
    return out


def main():
    model, out = sys.argv[1], sys.argv[2]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    with open(out, "w") as f:
        for i, text in enumerate(LINES):
            for turned in (False, True):
                image = render(text, 22 + 4 * i)
                if turned:
                    image = image.rotate(180)
                x = preprocess(image)
                f.write(json.dumps(np.round(x, 6).tolist()) + "\n")
                (p,) = session.run(None, {name: np.round(x, 6)[None]})
                print(json.dumps({"turned": turned, "probabilities": p[0].astype(float).tolist()}))


if __name__ == "__main__":
    main()
