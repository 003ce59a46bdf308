"""Demo trainable classifier (text@1 → class-label@1): learns which words go with which label, exactly as
written (case counts), and predicts by vote; a text with no word it knows is "negative". ``model.py
train`` reads /data/train.jsonl and writes /output/words.json; inference reads /app/model/words.json."""

import collections
import json
import sys

if len(sys.argv) > 1 and sys.argv[1] == "train":
    votes = collections.defaultdict(collections.Counter)
    with open("/data/train.jsonl") as lines:
        for line in lines:
            example = json.loads(line)
            for word in example["input"].split():
                votes[word][example["target"]] += 1
    with open("/output/words.json", "w") as out:
        json.dump({w: c.most_common(1)[0][0] for w, c in votes.items()}, out)
    print("learnt", sorted(votes), file=sys.stderr)
    sys.exit(0)
try:
    with open("/app/model/words.json") as model:
        words = json.load(model)
except OSError:  # the published algorithm itself answers, but only a trained copy predicts
    words = None
for line in sys.stdin:
    record = json.loads(line)
    if words is None:
        print(json.dumps({"id": record["id"], "error": "this algorithm must be trained first"}), flush=True)
        continue
    counts = collections.Counter(words[w] for w in record["input"].split() if w in words)
    label = counts.most_common(1)[0][0] if counts else "negative"
    print(json.dumps({"id": record["id"], "output": {"label": label}}), flush=True)
