"""The first step of every verification: parse without I/O, never echo what was sent."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pmkeys.api.vocabulary import Environment
from pmkeys.keys.material import ALPHABET, MalformedKey, generate, parse

random_part = st.text(alphabet=ALPHABET, min_size=32, max_size=32)


@given(st.sampled_from(["live", "test"]), random_part)
def test_every_well_formed_key_parses(env: str, rest: str) -> None:
    assert parse(f"pm_{env}_{rest}").environment is Environment(env)


@given(st.text(max_size=80))
def test_anything_else_is_refused_without_echo(text: str) -> None:
    try:
        key = parse(text)
    except MalformedKey as exc:
        if len(text) >= 4:
            assert text not in str(exc)
    else:
        assert key.value == text and len(text) == 40


@given(st.sampled_from(["live", "test"]), random_part, st.integers(0, 39), st.characters())
def test_one_wrong_character_is_refused(env: str, rest: str, where: int, char: str) -> None:
    key = f"pm_{env}_{rest}"
    mutated = key[:where] + char + key[where + 1 :]
    if mutated == key or (where >= 8 and char in ALPHABET) or (where == 3 and mutated[3:8] in ("live_", "test_")):
        return
    with pytest.raises(MalformedKey):
        parse(mutated)


def test_repr_shows_only_the_display_prefix() -> None:
    key = generate(Environment.LIVE)
    assert key.value not in repr(key) and key.value[8:] not in str(key)
