"""Demo conditioner: cut each box out of the image that travels with it (bounding-boxes@1 → image-crops@1)."""

import base64
import json
import sys


def handle(record):
    payload = record["input"]
    image = payload["image"]
    pixels = base64.b64decode(image["data"])
    crops = []
    for box in payload["boxes"]:
        x, y, w, h = int(box["x"]), int(box["y"]), int(box["width"]), int(box["height"])
        rows = [pixels[(y + r) * image["width"] + x : (y + r) * image["width"] + x + w] for r in range(h)]
        data = base64.b64encode(b"".join(rows)).decode()
        crops.append(
            {"image": {"data": data, "media_type": image["media_type"], "width": w, "height": h}, "box": box}
        )
    print(json.dumps({"id": record["id"], "output": {"crops": crops}}), flush=True)


for line in sys.stdin:
    record = json.loads(line)
    try:
        handle(record)
    except Exception as exc:  # a record it cannot read is that record's error, not a crash
        print(json.dumps({"id": record.get("id"), "error": f"{type(exc).__name__}: {exc}"}), flush=True)
