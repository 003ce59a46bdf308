"""A package whose entrypoint prints what no database can store, or what JSON cannot hold, while it is
tested at publishing (real bwrap, SQLite and PostgreSQL): the publication fails with a clear reason.

Before, a NUL on stderr or in an error reply failed the publication's final write on PostgreSQL, and a
lone surrogate escape on both databases: it stayed RUNNING for recovery to retry for ever. An answer nested
deeper than the JSON decoder recurses, or holding NaN, failed the step as an internal error.
"""

from __future__ import annotations

import asyncio

import pytest
from publishing_support import package_files, sentiment_manifest, zip_bytes
from test_publish_packages import publish

from catalog.actors import Actor
from catalog.publishing.service import PublishingService

# Each entrypoint answers every record it is given with the same hand-written line.
ANSWER = "import json, sys\nfor line in sys.stdin:\n    print({!r} % json.dumps(json.loads(line)['id']))\n"


@pytest.mark.parametrize(
    ("predict", "reason"),
    [
        (
            "import sys\nsys.stderr.write('model \\x00 missing\\n')\nsys.exit(1)\n",
            "exited with status 1: model \ufffd missing): model \ufffd missing",
        ),
        (ANSWER.format('{"id": %s, "error": "bad \\u0000 input"}'), "returned an error: bad \ufffd input"),
        (ANSWER.format('{"id": %s, "output": {"label": "\\ud800"}}'), "holds an unpaired UTF-16 surrogate"),
        (ANSWER.format('{"id": %s, "output": ' + "[" * 100_000 + "]" * 100_000 + "}"), "nested too deeply"),
        (ANSWER.format('{"id": %s, "output": {"label": NaN}}'), "is not JSON"),
    ],
    ids=["stderr-nul", "error-nul", "surrogate", "deep", "nan"],
)
async def test_an_entrypoint_printing_the_unstorable_fails_its_publication_clearly(
    publishing: PublishingService, alice: Actor, predict: str, reason: str
) -> None:
    payload = zip_bytes(package_files(sentiment_manifest(), predict=predict))
    pub = await asyncio.wait_for(publish(publishing, alice, payload), 60)
    assert pub.status == "failed"
    (failed,) = [s for s in pub.steps if s.status == "failed"]  # test (the probe), or verify (unit tests)
    assert reason in failed.error and reason in pub.error
