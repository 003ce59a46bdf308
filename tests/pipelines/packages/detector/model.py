"""Demo detector: one box around the bright pixels of a raw grayscale image (image@1 → bounding-boxes@1)."""

import base64
import json
import sys


def handle(record):
    image = record["input"]
    if image.get("width") == 13:  # a record this demo "cannot" handle, to show per-record errors
        print(json.dumps({"id": record["id"], "error": "unsupported image width 13"}), flush=True)
        return
    pixels = base64.b64decode(image["data"])
    width = image["width"]
    bright = [(i % width, i // width) for i, value in enumerate(pixels) if value > 128]
    boxes = []
    if bright:
        xs, ys = [x for x, _ in bright], [y for _, y in bright]
        box = {"x": min(xs), "y": min(ys), "width": max(xs) - min(xs) + 1, "height": max(ys) - min(ys) + 1}
        boxes.append({**box, "label": "object", "confidence": 0.99, "debug": "dropped by the output filter"})
    print(json.dumps({"id": record["id"], "output": {"boxes": boxes, "image": image}}), flush=True)


for line in sys.stdin:
    record = json.loads(line)
    try:
        handle(record)
    except Exception as exc:  # a record it cannot read is that record's error, not a crash
        print(json.dumps({"id": record.get("id"), "error": f"{type(exc).__name__}: {exc}"}), flush=True)
