"""Demo classifier: label each crop by its mean brightness (image-crops@1 → predictions@1)."""

import base64
import json
import sys


def handle(record):
    predictions = []
    for crop in record["input"]["crops"]:
        pixels = base64.b64decode(crop["image"]["data"])
        mean = sum(pixels) / len(pixels)
        box = crop["box"]
        location = {k: box[k] for k in ("x", "y", "width", "height")}
        label = "lamp" if mean > 200 else "sign"
        predictions.append({"value": label, "location": location, "confidence": round(mean / 255, 3)})
    print(json.dumps({"id": record["id"], "output": {"predictions": predictions}}), flush=True)


for line in sys.stdin:
    record = json.loads(line)
    try:
        handle(record)
    except Exception as exc:  # a record it cannot read is that record's error, not a crash
        print(json.dumps({"id": record.get("id"), "error": f"{type(exc).__name__}: {exc}"}), flush=True)
