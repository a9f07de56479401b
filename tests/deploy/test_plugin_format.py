"""The plugin's pure formatting, without a cluster: ages, tables, describe."""

from __future__ import annotations

import datetime as dt

import pytest

from pmkeys import plugin

NOW = dt.datetime(2026, 1, 10, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("ago", "shown"),
    [
        (dt.timedelta(seconds=0), "0s"),
        (dt.timedelta(seconds=59), "59s"),
        (dt.timedelta(minutes=1), "1m"),
        (dt.timedelta(minutes=59, seconds=59), "59m"),
        (dt.timedelta(hours=5), "5h"),
        (dt.timedelta(days=3, hours=23), "3d"),
        (dt.timedelta(seconds=-30), "0s"),  # clock skew never shows a negative age
    ],
)
def test_age(ago: dt.timedelta, shown: str) -> None:
    assert plugin.age((NOW - ago).strftime("%Y-%m-%dT%H:%M:%SZ"), now=NOW) == shown


def test_age_of_nothing() -> None:
    assert plugin.age(None, now=NOW) == "<never>"


def test_table_aligns_columns_and_blanks_none() -> None:
    assert plugin.table(["NAME", "N"], [["a", 1], ["long-name", None]]).splitlines() == [
        "NAME        N",
        "a           1",
        "long-name",
    ]


def test_describe_of_a_fresh_object() -> None:
    obj = {
        "metadata": {"name": "k", "namespace": "acme"},
        "spec": {"tenant": "acme", "scopes": ["send_email"], "tier": "starter", "environment": "live"},
    }
    text = plugin.describe_text(obj, [])
    assert "Phase:         Pending" in text and "Key:           <none>" in text
    assert "Events:        none" in text and "Previous keys: none" in text
