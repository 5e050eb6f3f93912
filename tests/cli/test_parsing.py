"""Durations, start times and the relative-time display of `jit`."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jit_hooks.cli.options import parse_duration, parse_start
from jit_hooks.cli.output import relative, span


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90m", 5400),
        ("2h", 7200),
        ("1h30m", 5400),
        ("3600", 3600),
        ("45s", 45),
        ("1d", 86400),
        ("1d2h3m4s", 93784),
        (" 2H ", 7200),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0m", "2x", "h", "1.5h", "30m1h", "-5m", "1 h", "m30"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@given(st.integers(0, 400), st.integers(0, 59), st.integers(0, 59))
def test_duration_units_add_up(h, m, s):
    if h == m == s == 0:
        return
    text = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{s}s" if s else "")
    assert parse_duration(text) == h * 3600 + m * 60 + s


@given(st.integers(60, 10 * 86400))
def test_span_reads_back_within_its_precision(seconds):
    # span() keeps the two largest units; parsing it back loses at most the rest.
    back = parse_duration(span(seconds))
    assert back <= seconds
    assert seconds - back < (3600 if seconds >= 86400 else 60)


def test_start_relative_and_iso():
    now = 1_764_000_000
    assert parse_start("+30m", now) == now + 1800
    assert parse_start("2026-11-25T18:00:00+00:00", now) == int(
        datetime(2026, 11, 25, 18, tzinfo=UTC).timestamp()
    )
    assert parse_start("2026-11-25T18:00Z", now) == int(
        datetime(2026, 11, 25, 18, tzinfo=UTC).timestamp()
    )
    naive = parse_start("2026-11-25T18:00", now)
    assert naive == int(datetime(2026, 11, 25, 18).astimezone().timestamp())
    for bad in ("tomorrow", "+", "+2x", "25/11/2026"):
        with pytest.raises(ValueError):
            parse_start(bad, now)


def test_relative_times():
    ref = 1_764_000_000
    assert relative(ref + 42 * 60, ref) == "in 42m"
    assert relative(ref - 3 * 3600, ref) == "3h ago"
    assert relative(ref + 5400, ref) == "in 1h30m"
    assert relative(ref + 5, ref) == "now"
