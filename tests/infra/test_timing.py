"""Stage timings for the Server-Timing header: recorded only inside a collection, added up per name."""

from __future__ import annotations

import asyncio
import time

import pytest

from infra.timing import collecting, parse_server_timing, server_timing, stage


def test_a_stage_outside_a_collection_records_nothing() -> None:
    with stage("encode"):
        pass
    with collecting() as seconds:
        pass
    assert seconds == {}


def test_stages_add_up_by_name_and_nest() -> None:
    with collecting() as seconds, stage("outer"):
        with stage("inner"):
            time.sleep(0.002)
        with stage("inner"):
            time.sleep(0.002)
    assert set(seconds) == {"outer", "inner"}
    assert seconds["inner"] >= 0.004
    assert seconds["outer"] >= seconds["inner"]


def test_collections_do_not_leak_into_each_other() -> None:
    with collecting() as first:
        with collecting() as second, stage("inner"):
            pass
        with stage("outer"):
            pass
    assert set(first) == {"outer"}
    assert set(second) == {"inner"}


async def test_tasks_started_inside_a_collection_record_into_it() -> None:
    async def work() -> None:
        with stage("task"):
            await asyncio.sleep(0.001)

    with collecting() as seconds:
        await asyncio.gather(work(), work())
    assert seconds["task"] > 0


@pytest.mark.parametrize("name", ["", "two words", "semi;colon", "comma,", "é"])
def test_a_stage_name_must_be_an_http_token(name: str) -> None:
    with collecting(), pytest.raises(ValueError, match="HTTP token"), stage(name):
        pass


def test_header_round_trip_in_milliseconds() -> None:
    header = server_timing({"encode": 0.0123456, "rank": 0.001})
    assert header == "encode;dur=12.346, rank;dur=1.000"
    assert parse_server_timing(header) == {"encode": 12.346, "rank": 1.0}


def test_parsing_skips_metrics_without_a_duration() -> None:
    header = 'cache;desc="hit", db;dur="2.5", miss, total;desc=x;dur=7'
    assert parse_server_timing(header) == {"db": 2.5, "total": 7.0}
