"""The ids the gateway hands out for files and batches: signed, naming the deployment
that holds the object.

An id is ``file-gw<payload>.<mac>`` (``batch_gw...`` for a batch): the payload is the
alias, the deployment id, the upstream's own id and the owner (the client key's name,
empty for the master key), base64url-encoded; the MAC is HMAC-SHA256 over the kind and
payload, cut to 16 bytes. A client cannot forge an id for another deployment or
another key's object, and every later call goes where the object is.

The HMAC key is ``general_settings.object_id_secret`` when set (the same on every
instance that shares ids); else derived from the master key; else random per process
start (ids then do not outlive a restart; a warning says so).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, succeed

from gatewayd.config.model import GeneralSettings
from gatewayd.observability.log import get_logger

#: The id prefixes OpenAI uses, kept so that clients that look at them are not surprised.
PREFIXES = {"file": "file-gw", "batch": "batch_gw"}
MAC_BYTES = 16
#: Objects remembered per process for list filtering (the oldest forgotten first).
MAX_OWNED = 100_000
#: Seconds an object's owner is kept in the state store (files and batches outlive
#: requests; OpenAI's batch files expire after 30 days).
OWNER_TTL = 90 * 86400.0

log = get_logger(__name__)


@dataclass(frozen=True)
class ObjectRef:
    """What a signed id says: where the object is and whose it is."""

    kind: str
    alias: str
    deployment: str
    upstream_id: str
    owner: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ObjectIds:
    """Signs and opens object ids with one secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    @classmethod
    def from_settings(cls, general: GeneralSettings) -> tuple[ObjectIds, str | None]:
        """The ids for these settings, and a warning when the secret is per process."""
        if general.object_id_secret:
            return cls(general.object_id_secret.encode()), None
        if general.master_key:
            derived = hmac.new(
                general.master_key.encode(), b"gatewayd object ids", hashlib.sha256
            ).digest()
            return cls(derived), None
        return cls(os.urandom(32)), (
            "file and batch ids are signed with a random per-process secret (no "
            "object_id_secret and no master_key): they will not outlive a restart, "
            "nor work across workers"
        )

    def _mac(self, kind: str, payload: str) -> str:
        digest = hmac.new(self._secret, f"{kind}:{payload}".encode(), hashlib.sha256).digest()
        return _b64(digest[:MAC_BYTES])

    def sign(self, kind: str, alias: str, deployment: str, upstream_id: str, owner: str) -> str:
        payload = _b64(
            json.dumps([alias, deployment, upstream_id, owner], separators=(",", ":")).encode()
        )
        return f"{PREFIXES[kind]}{payload}.{self._mac(kind, payload)}"

    def open(self, kind: str, token: str) -> ObjectRef | None:
        """The reference a genuine id of ``kind`` holds; None for anything else."""
        prefix = PREFIXES[kind]
        if not token.startswith(prefix):
            return None
        payload, _, mac = token[len(prefix) :].partition(".")
        if not mac or not hmac.compare_digest(mac, self._mac(kind, payload)):
            return None
        try:
            fields = json.loads(_unb64(payload))
        except (ValueError, binascii.Error):
            return None
        if not isinstance(fields, list) or len(fields) != 4:
            return None
        if not all(isinstance(f, str) for f in fields):
            return None
        return ObjectRef(kind, *fields)


class OwnedObjects:
    """Which key owns which upstream object: lists are filtered by it (the upstream
    knows nothing of the gateway's keys). Kept here (the newest :data:`MAX_OWNED`) and,
    through ``store`` (the state store: Redis when configured), for every worker and
    instance, for :data:`OWNER_TTL` seconds."""

    def __init__(self, store: Any = None, limit: int = MAX_OWNED) -> None:
        self._owners: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._limit = limit
        self._store = store

    @staticmethod
    def _key(deployment: str, upstream_id: str) -> str:
        return f"gatewayd:owner:{deployment}:{upstream_id}"

    def note(self, deployment: str, upstream_id: str, owner: str, share: bool = True) -> None:
        self._owners[(deployment, upstream_id)] = owner
        self._owners.move_to_end((deployment, upstream_id))
        while len(self._owners) > self._limit:
            self._owners.popitem(last=False)
        if share and self._store is not None:
            try:
                d = self._store.set(self._key(deployment, upstream_id), owner, OWNER_TTL)
            except Exception as e:  # a store that cannot even start the call
                log.debug("object owner not shared: {err}", err=str(e))
            else:  # lost when the store is down: this process still knows
                d.addErrback(lambda f: log.debug("object owner not shared: {f}", f=f.value))

    def owner(self, deployment: str, upstream_id: str) -> str | None:
        return self._owners.get((deployment, upstream_id))

    def learn(self, deployment: str, upstream_ids: list[str]) -> Deferred[None]:
        """Look up in the store the owners of ``upstream_ids`` this process does not
        know; fires (with None) once they are known here, or could not be."""
        unknown = [i for i in upstream_ids if (deployment, i) not in self._owners]
        if not unknown or self._store is None:
            return succeed(None)

        def got(values: list[Any]) -> None:
            for upstream_id, (ok, owner) in zip(unknown, values, strict=True):
                if ok and isinstance(owner, str):
                    self.note(deployment, upstream_id, owner, share=False)

        try:
            lookups = [self._store.get(self._key(deployment, i)) for i in unknown]
        except Exception:
            return succeed(None)
        return DeferredList(lookups, consumeErrors=True).addCallback(got)
