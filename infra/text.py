"""Text a sandboxed program wrote, made safe to store and to send.

Why: PostgreSQL refuses NUL in text (SQLite keeps it), and no database driver can encode a lone UTF-16
surrogate (a JSON "\\ud800" decodes to one). A job's or publication's reason or log quoting such text
failed its final write, and the run stayed unfinished for recovery to retry for ever.
"""

from __future__ import annotations

import json
import re
from typing import Any

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(text: str) -> str:
    """``text`` with NUL and lone surrogates replaced by U+FFFD. A pair of surrogates never reaches
    here: JSON decoding joins it into one character."""
    return _UNSTORABLE.sub("\ufffd", text)


def holds_lone_surrogate(value: Any) -> bool:
    """Whether a decoded JSON value holds a lone surrogate anywhere (a key or a string in it)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
