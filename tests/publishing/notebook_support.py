"""Builders for Jupyter notebooks (nbformat 4) as producers save them."""

from __future__ import annotations

import json
from typing import Any


def md(source: str) -> dict[str, Any]:
    return {"cell_type": "markdown", "metadata": {}, "source": source.splitlines(keepends=True)}


def code(source: str, *tags: str) -> dict[str, Any]:
    return {
        "cell_type": "code",
        "metadata": {"tags": list(tags)} if tags else {},
        "source": source.splitlines(keepends=True),
        "outputs": [],
        "execution_count": None,
    }


def notebook_bytes(cells: list[dict[str, Any]], **metadata: Any) -> bytes:
    document = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}, **metadata},
        "cells": cells,
    }
    return json.dumps(document, indent=1).encode()


WORD_STATS_CELLS = [
    md("# Word statistics\n\nCounts the words of an English text and finds its longest word.\n"),
    md("## Parameters\n\n`text` is the text to read; `top` how many long words to list.\n"),
    code("text = 'the quick brown fox'\ntop = 1\n", "parameters"),
    code("print('reading', len(text), 'characters')\nwords = text.split()\nlen(words)\n"),
    code(
        "longest = sorted(words, key=len, reverse=True)[:top]\n"
        "output = {'words': len(words), 'longest': longest}\n"
    ),
]


def word_stats_notebook(**metadata: Any) -> bytes:
    return notebook_bytes(WORD_STATS_CELLS, **metadata)


def word_stats_manifest(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "word-stats",
        "category": "Natural Language Processing",
        "tags": ["words", "text statistics"],
        "timeout_s": 10,
        "tests": [
            {
                "name": "two-words",
                "input": {"text": "hello wonderful", "top": 1},
                "expected_output": {"words": 2, "longest": ["wonderful"]},
            }
        ],
        "verify": True,
    }
    data.update(overrides)
    return data
