"""Who changed an object, read back from what the admission policy stamped on it.

:mod:`pmkeys.audit.admission` writes the last editor and a bounded change log into
annotations at admission; this module turns them into an :class:`Actor` and a list of
:class:`Edit`. Nothing here trusts a value the policy did not write: the policy overwrites
those annotations on every change, so whatever a tenant put there is gone before the object
is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pmkeys.audit.admission import CHANGE_LOG, CHANGED_BY, CHANGED_BY_GROUPS
from pmkeys.audit.records import UNKNOWN_ACTOR, Actor, ActorSource


@dataclass(frozen=True)
class Edit:
    """One admitted change: the resourceVersion it was made on, the fields, the user."""

    resource_version: int
    fields: tuple[str, ...]
    username: str

    def to_json(self) -> dict[str, object]:
        return {"resourceVersion": self.resource_version, "fields": list(self.fields), "username": self.username}


def last_editor(annotations: Mapping[str, str] | None) -> Actor:
    annotations = annotations or {}
    username = annotations.get(CHANGED_BY, "")
    if not username:
        return UNKNOWN_ACTOR
    groups = tuple(g for g in annotations.get(CHANGED_BY_GROUPS, "").split(",") if g)
    return Actor(username=username, groups=groups, source=ActorSource.ADMISSION)


def change_log(annotations: Mapping[str, str] | None) -> list[Edit]:
    edits = []
    for line in (annotations or {}).get(CHANGE_LOG, "").splitlines():
        parts = line.split(" ", 2)
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        fields = () if parts[1] == "-" else tuple(parts[1].split(","))
        edits.append(Edit(int(parts[0]), fields, parts[2]))
    return edits


def edits_since(annotations: Mapping[str, str] | None, resource_version: int | None) -> list[Edit]:
    """Edits made on or after ``resource_version`` (all kept ones when it is unknown)."""
    return [e for e in change_log(annotations) if resource_version is None or e.resource_version >= resource_version]
