"""What the verifier knows about TenantApiKey objects, from the watch: which exist, which are
revoked or being deleted, and which key ids belong to which object.

The watch (:mod:`pmkeys.verify.watching`) reports changes; this index turns them into the
questions the verifier asks: was this object revoked or deleted (refuse its keys whatever Vault
says), does it exist at all (a record whose object the watch never listed belongs to an object
deleted while this process was not watching: refused too), who owns this key id (error reports
by key id), and did an object get a new key (a negative cache entry may then be wrong).
"""

from __future__ import annotations

from pmkeys.verify.watching import ObjectFacts


class ObjectIndex:
    def __init__(self) -> None:
        self._objects: dict[str, ObjectFacts] = {}
        self._key_owners: dict[str, str] = {}
        #: Objects revoked by spec, being deleted, or deleted: their keys are refused.
        self._revoked: set[str] = set()

    def changed(self, uid: str, facts: ObjectFacts | None) -> bool:
        """Record a change (``facts``) or a deletion (None); True when the object's key ids
        are new (a key that was unknown a moment ago may exist now)."""
        previous = self._objects.get(uid)
        if previous is not None:
            for key_id in previous.key_ids:
                if self._key_owners.get(key_id) == uid:
                    del self._key_owners[key_id]
        if facts is None:
            self._objects.pop(uid, None)
            self._revoked.add(uid)
            return False
        self._objects[uid] = facts
        for key_id in facts.key_ids:
            self._key_owners[key_id] = uid
        if facts.revoked:
            self._revoked.add(uid)
        return previous is None or previous.key_ids != facts.key_ids

    def revoked(self, uid: str) -> bool:
        return uid in self._revoked

    def exists(self, uid: str) -> bool:
        """The watch has seen object ``uid`` and not its deletion."""
        return uid in self._objects

    def facts(self, uid: str) -> ObjectFacts | None:
        """What the watch last said about object ``uid`` (None: not seen, or deleted)."""
        return self._objects.get(uid)

    def owner(self, key_id: str) -> ObjectFacts | None:
        """The object whose current or in-grace key is ``key_id``, if the watch has seen it."""
        return self._objects.get(self._key_owners.get(key_id, ""))
