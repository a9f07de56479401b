"""Seals of handed-over records (pmkeys.verify.handover): what a reader or a writer of Redis
can do with one. The end-to-end attacks, with real replicas and Redis, are in
tests/attacks/test_handover_attacks.py."""

from __future__ import annotations

import base64
import datetime as dt
import secrets

import pytest

from pmkeys.api.vocabulary import Scope, Tier
from pmkeys.vault.records import KeyRecord
from pmkeys.verify.handover import CLOCK_SKEW_SECONDS, Sealed, age_if_fresh, seal, seal_key, unseal

PEPPER = secrets.token_bytes(32)
ROOT = seal_key(PEPPER)
DIGEST = secrets.token_hex(32)
BCRYPT = "$2b$12$" + "x" * 53


def sealed(**changes: object) -> Sealed:
    record = KeyRecord(
        key_id="k1a2b3c4d5e6",
        tenant="acme-corp",
        namespace="tenant-acme",
        name="billing",
        uid="3f6c1e8a-0000-4000-8000-000000000001",
        bcrypt=BCRYPT,
        scopes=[Scope.SEND_EMAIL, Scope.READ_ANALYTICS],
        tier=Tier.PRO,
        rate_limit=300,
        created_at=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
        pepper_version=2,
        display_prefix="pm_live_abcd…",
    )
    return Sealed(record.model_copy(update=changes), fingerprint="f" * 64, read_at=1_000.0)


def test_a_seal_opens_to_what_was_sealed() -> None:
    original = sealed()
    opened = unseal(ROOT, DIGEST, 2, seal(ROOT, DIGEST, 2, original))
    assert opened == original


def test_a_reader_of_redis_learns_nothing_of_the_record() -> None:
    text = seal(ROOT, DIGEST, 2, sealed())
    raw = base64.urlsafe_b64decode(text)
    for field in (BCRYPT, "acme-corp", "tenant-acme", "billing", "k1a2b3c4d5e6", "send_email", "pm_live_abcd"):
        assert field.encode() not in raw and field not in text
    assert seal(ROOT, DIGEST, 2, sealed()) != text, "the same record seals differently each time"


@pytest.mark.parametrize(
    ("root", "digest", "version", "why"),
    [
        (seal_key(secrets.token_bytes(32)), DIGEST, 2, "made without the pepper"),
        (ROOT, secrets.token_hex(32), 2, "moved to another key's digest"),
        (ROOT, DIGEST, 3, "opened under another pepper version"),
    ],
)
def test_a_seal_opens_only_for_its_pepper_digest_and_version(root: bytes, digest: str, version: int, why: str) -> None:
    text = seal(root, digest, version, sealed())
    assert unseal(ROOT, DIGEST, 2, text) is None, why


def test_an_altered_seal_does_not_open() -> None:
    raw = bytearray(base64.urlsafe_b64decode(seal(ROOT, DIGEST, 2, sealed())))
    for position in (0, 40, len(raw) - 1):  # the nonce, the ciphertext, the tag
        altered = raw.copy()
        altered[position] ^= 1
        assert unseal(ROOT, DIGEST, 2, base64.urlsafe_b64encode(bytes(altered)).decode()) is None
    for garbage in ("", "not base64!", base64.urlsafe_b64encode(b"short").decode()):
        assert unseal(ROOT, DIGEST, 2, garbage) is None


def test_a_seal_is_trusted_for_one_cache_ttl_after_its_read() -> None:
    record = sealed()
    assert age_if_fresh(record, 30, now=1_000.0) == 0
    assert age_if_fresh(record, 30, now=1_029.5) == pytest.approx(29.5)
    assert age_if_fresh(record, 30, now=1_030.0) is None, "as old as the sealer's own entry: expired"
    assert age_if_fresh(record, 30, now=1_000.0 - CLOCK_SKEW_SECONDS / 2) == 0, "small skew"
    assert age_if_fresh(record, 30, now=1_000.0 - CLOCK_SKEW_SECONDS - 1) is None, "read in the future"
