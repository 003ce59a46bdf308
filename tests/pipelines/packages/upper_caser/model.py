"""Demo conditioner (text@1 → text@1): upper-cases each text. A record that is not a text is that
record's error; the text "crash" ends the process (the test of a step in front whose sandbox fails)."""

import json
import sys

for line in sys.stdin:
    record = json.loads(line)
    if record["input"] == "crash":
        sys.exit(3)
    if not isinstance(record["input"], str) or record["input"] == "unreadable":
        print(json.dumps({"id": record["id"], "error": "not a text I can read"}), flush=True)
        continue
    print(json.dumps({"id": record["id"], "output": record["input"].upper()}), flush=True)
