"""Object answers with their ids handed out signed (:mod:`gatewayd.web.object_ids`),
and lists cut to what the caller may see: shared by a routed object call
(:mod:`gatewayd.web.objects`) and a list gathered from every deployment
(:mod:`gatewayd.web.object_lists`)."""

from __future__ import annotations

import json
from typing import Any

from gatewayd.web.exchange import Gateway
from gatewayd.web.object_ids import ObjectIds, OwnedObjects
from gatewayd.web.request import GatewayRequest

#: Fields of a batch that name files.
FILE_FIELDS = ("input_file_id", "output_file_id", "error_file_id")


class ObjectStore:
    """What the object resources share: the gateway, the id signer and the owners."""

    def __init__(self, gateway: Gateway, ids: ObjectIds) -> None:
        self.gateway = gateway
        self.ids = ids
        self.owners = OwnedObjects(getattr(gateway.limiter, "store", None))


def owner_of(request: GatewayRequest) -> str:
    """The owner recorded in ids this request creates: its key's name, "" for master."""
    name = request.caller.name if request.caller is not None else None
    return name or ""


def sees_all(request: GatewayRequest) -> bool:
    """The master key (or no auth) sees every object; a client key only its own."""
    caller = request.caller
    return caller is None or caller.key is None


def may_see(request: GatewayRequest, owner: str) -> bool:
    return sees_all(request) or owner == owner_of(request)


def list_items(body: bytes | None) -> list[dict[str, Any]] | None:
    """The items of a list answer, or None when ``body`` is not one."""
    if body is None or b'"list"' not in body:
        return None
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("object") != "list":
        return None
    data = obj.get("data")
    return [i for i in data if isinstance(i, dict)] if isinstance(data, list) else None


def item_ids(items: list[dict[str, Any]]) -> list[str]:
    return [i["id"] for i in items if isinstance(i.get("id"), str)]


def signed(
    store: ObjectStore, alias: str, dep: str, item: dict[str, Any], owner: str, made: bool
) -> dict[str, Any]:
    """``item`` with its ids signed. ``made``: an answer about this very object (a
    create, a read by id): its ids are owned by ``owner`` and noted so; else (a list)
    each id keeps the owner noted when it was made."""
    kind = "batch" if item.get("object") == "batch" else "file"
    out = dict(item)
    for f in ["id", *FILE_FIELDS] if kind == "batch" else ["id"]:
        upstream_id = out.get(f)
        if not isinstance(upstream_id, str) or not upstream_id:
            continue
        who = owner
        if made:
            store.owners.note(dep, upstream_id, owner)
        else:
            who = store.owners.owner(dep, upstream_id) or owner
        out[f] = store.ids.sign(kind if f == "id" else "file", alias, dep, upstream_id, who)
    return out


def visible_signed(
    store: ObjectStore,
    alias: str,
    dep: str,
    items: list[dict[str, Any]],
    owner: str,
    everything: bool,
) -> list[dict[str, Any]]:
    """The list items the caller may see (all with ``everything``, else those ``owner``
    made), their ids signed."""
    kept = []
    for item in items:
        upstream_id = item.get("id")
        if everything or (
            isinstance(upstream_id, str) and store.owners.owner(dep, upstream_id) == owner
        ):
            kept.append(signed(store, alias, dep, item, owner, made=False))
    return kept


def list_answer(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """OpenAI's list object; its cursors are the (signed) first and last ids shown."""
    return {
        "object": "list",
        "data": items,
        "first_id": items[0].get("id") if items else None,
        "last_id": items[-1].get("id") if items else None,
        "has_more": has_more,
    }
