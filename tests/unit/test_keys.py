"""Key material: format, parsing, digests, display prefixes (pure, no servers)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pmkeys.api.vocabulary import Environment
from pmkeys.keys import material
from pmkeys.keys.digest import digest, new_pepper


@pytest.mark.parametrize("environment", list(Environment))
def test_generated_keys_have_the_documented_format(environment: Environment) -> None:
    key = material.generate(environment)
    assert key.value.startswith(f"pm_{environment.value}_")
    assert len(key.value) == 40
    assert set(key.value[8:]) <= set(string.ascii_letters + string.digits)
    assert material.parse(key.value) == key


def test_keys_are_not_repeated() -> None:
    assert len({material.generate(Environment.LIVE).value for _ in range(2000)}) == 2000


def test_repr_and_str_never_show_the_key() -> None:
    key = material.generate(Environment.LIVE)
    for shown in (repr(key), str(key), f"{key}", str([key])):
        assert key.value not in shown and key.value[8:] not in shown
    assert key.display_prefix == key.value[:12] + "…"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "pm_live_",
        "pm_prod_" + "a" * 32,
        "pm_live_" + "a" * 31,
        "pm_live_" + "a" * 33,
        "pm_live_" + "a" * 31 + "-",
        "PM_LIVE_" + "a" * 32,
        "pm_live_" + "é" * 32,
        " pm_live_" + "a" * 31,
    ],
)
def test_malformed_keys_are_rejected_without_echo(text: str) -> None:
    with pytest.raises(material.MalformedKey) as err:
        material.parse(text)
    if text[8:]:
        assert text[8:] not in str(err.value)


@given(st.text(max_size=80))
def test_parse_accepts_exactly_the_key_grammar(text: str) -> None:
    valid = (
        len(text) == 40
        and text[:8] in ("pm_live_", "pm_test_")
        and all(c in string.ascii_letters + string.digits for c in text[8:])
    )
    try:
        material.parse(text)
    except material.MalformedKey:
        assert not valid
    else:
        assert valid


def test_digest_depends_on_pepper_and_key() -> None:
    key = material.generate(Environment.LIVE).value
    p1, p2 = new_pepper(1), new_pepper(2)
    assert digest(p1, key) == digest(p1, key)
    assert digest(p1, key) != digest(p2, key)
    assert digest(p1, key) != digest(p1, material.generate(Environment.LIVE).value)
    assert len(digest(p1, key)) == 64 and repr(p1) == "Pepper(version=1)"


def test_key_ids_are_short_and_url_safe() -> None:
    ids = {material.new_key_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 12 and i.isalnum() and i.islower() for i in ids)
