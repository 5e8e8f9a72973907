"""Images of known text for the OCR test and benchmark, rendered with Pillow and the
DejaVu fonts of Debian's fonts-dejavu-core package: pages of a few lines in varied
sizes and fonts, some lines tilted a few degrees, some pages upside down, single
lines (thin images), a page wider than 2000 pixels; PNG and JPEG. The same seed gives
the same images.

As a module: `images(count)` -> [(bytes, format, [known line, ...])].
As a script: ocr_images.py COUNT OUT_JSONL writes one base64 image a line.
"""

import base64
import io
import json
import random
import sys

from PIL import Image, ImageDraw, ImageFont

FONTS = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
]
PHRASES = [
    "Invoice 2026-12-01", "Total due: 42.50 EUR", "The quick brown fox", "jumps over the lazy dog",
    "WebAssembly components", "Model handlers in any language", "Order number 118302",
    "Shipped to Berlin", "Phone +49 30 1234567", "Meeting at 10:30", "Room 4B, second floor",
    "Batch size 32", "Thank you for your order", "Paid by card", "Hello world",
    "Open Inference Protocol", "Quantity 7 x 3.20", "Subtotal 22.40", "Tax 19% 4.26",
    "Delivery in 3 days", "runinfer serves handlers", "Keep this receipt", "Page 1 of 2",
    "Customer ID 50917", "Reference ABC-2231", "Sunday closed", "Fresh bread daily",
    "Train 14:05 Platform 6", "Temperature 21.5 C", "Version 0.2.0", "Welcome back",
    "Exit", "Parking level -2", "Gate 23", "Flight LH 2024", "Seat 17C",
]


def font(path, size):
    try:
        return ImageFont.truetype(path, size)
    except OSError as e:
        raise SystemExit(f"{path}: {e} (Debian's fonts-dejavu-core package ships it)")


def line_image(text, face, size, angle):
    """One line, black on a transparent layer, tilted by `angle` degrees."""
    f = font(face, size)
    left, top, right, bottom = f.getbbox(text)
    layer = Image.new("LA", (right - left + 2 * size, bottom - top + size), (0, 0))
    ImageDraw.Draw(layer).text((size - left, size // 2 - top), text, font=f, fill=(0, 255))
    if angle:
        layer = layer.rotate(angle, resample=Image.BICUBIC, expand=True)
    return layer.crop(layer.getbbox())


def page(rng, lines, width, tilt, margin=40):
    """Lines stacked with room between them on a white page."""
    placed = []
    y = margin
    for text in lines:
        size = rng.choice([18, 22, 26, 30, 34])
        angle = rng.uniform(-4, 4) if tilt else 0
        layer = line_image(text, rng.choice(FONTS), size, angle)
        if layer.width > width - 2 * margin:
            width = layer.width + 2 * margin
        placed.append((layer, y))
        y += layer.height + rng.randint(size, 2 * size)
    image = Image.new("RGB", (width, y + margin), "white")
    for layer, top in placed:
        x = rng.randint(margin, max(margin, width - margin - layer.width))
        image.paste((0, 0, 0), (x, top), layer.getchannel("A"))
    return image


def encode(image, rng):
    fmt = rng.choice(["PNG", "PNG", "JPEG"])
    out = io.BytesIO()
    image.save(out, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return out.getvalue(), fmt


def images(count, seed=11):
    rng = random.Random(seed)
    out = []
    for i in range(count):
        kind = i % 6
        if kind == 5:
            # One long line alone, tight: a thin image (rapidocr letterboxes it).
            text = rng.choice([p for p in PHRASES if len(p) >= 18])
            layer = line_image(text, rng.choice(FONTS), rng.choice([22, 26, 30]), 0)
            image = Image.new("RGB", (layer.width + 16, layer.height + 12), "white")
            image.paste((0, 0, 0), (8, 6), layer.getchannel("A"))
            lines = [text]
        else:
            lines = rng.sample(PHRASES, rng.randint(2, 4))
            image = page(rng, lines, rng.choice([640, 800, 960]), tilt=kind in (1, 3))
            if kind == 2:
                image = image.rotate(180)  # upside down: the direction classifier's work
            if kind == 4 and i % 12 == 4:
                # Wider than 2000 pixels: rapidocr shrinks it first.
                image = image.resize((image.width * 3, image.height * 3), Image.BICUBIC)
        data, fmt = encode(image, rng)
        out.append((data, fmt, lines))
    return out


def main():
    count, path = int(sys.argv[1]), sys.argv[2]
    with open(path, "w") as f:
        for data, _, _ in images(count):
            f.write(json.dumps(base64.b64encode(data).decode()) + "\n")


if __name__ == "__main__":
    main()
