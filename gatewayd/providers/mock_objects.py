"""The mock provider's files and batches, in OpenAI's shapes, kept in memory.

A batch runs at once: each line of its input file (``{custom_id, method, url, body}``)
is answered by the mock itself, into an output file. It is ``validating`` when created
and ``completed`` from the first time it is read (``cancelled`` if cancelled before).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from gatewayd.providers.base import (
    Endpoint,
    FailureKind,
    ProviderRequest,
    UpstreamFailure,
    UpstreamResponse,
    openai_error,
)
from gatewayd.providers.mock_input import invalid

#: Files kept per mock deployment (the oldest forgotten first).
MAX_FILES = 1000
#: A batch line's ``url`` and what answers it.
BATCH_URLS = {
    "/v1/chat/completions": Endpoint.CHAT,
    "/v1/completions": Endpoint.COMPLETIONS,
    "/v1/embeddings": Endpoint.EMBEDDINGS,
}

#: Answers one batch line: its endpoint and body to the answer's JSON bytes.
RunLine = Callable[[Endpoint, dict[str, Any]], bytes]


def _json(payload: dict[str, Any]) -> UpstreamResponse:
    return UpstreamResponse(200, body=json.dumps(payload).encode())


def _missing(what: str, ident: str) -> UpstreamFailure:
    return UpstreamFailure(
        FailureKind.HTTP,
        404,
        openai_error(f"No such {what}: {ident}", "invalid_request_error", "not_found", "id"),
    )


class MockObjects:
    """One mock deployment's files and batches."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[dict[str, Any], bytes]] = {}
        self.batches: dict[str, dict[str, Any]] = {}

    def answer(self, request: ProviderRequest, run: RunLine) -> UpstreamResponse:
        path = (request.path or request.endpoint.value).split("?", 1)[0]
        parts = path.strip("/").split("/")
        method = request.method
        if parts[0] == "files":
            return self._files(request, method, parts[1:])
        return self._batches(request, method, parts[1:], run)

    # -- files ------------------------------------------------------------------

    def _add_file(self, name: str, purpose: str, data: bytes) -> dict[str, Any]:
        ident = "file-" + uuid.uuid4().hex[:24]
        meta = {
            "id": ident,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": name,
            "purpose": purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }
        self.files[ident] = (meta, data)
        while len(self.files) > MAX_FILES:
            self.files.pop(next(iter(self.files)))
        return meta

    def _files(self, request: ProviderRequest, method: str, rest: list[str]) -> UpstreamResponse:
        if not rest:
            if method == "POST":
                upload = request.upload
                purpose = request.body.get("purpose")
                if not isinstance(purpose, str) or not purpose:
                    raise invalid("'purpose' is a required property.", "purpose")
                data = upload.first_file() if upload is not None else b""
                name = upload.first_filename() if upload is not None else ""
                return _json(self._add_file(name or "upload", purpose, data))
            return _json(_listing([meta for meta, _ in self.files.values()]))
        known = self.files.get(rest[0])
        if known is None:
            raise _missing("file", rest[0])
        meta, data = known
        if len(rest) > 1 and rest[1] == "content":
            return UpstreamResponse(
                200, [(b"content-type", b"application/octet-stream")], body=data
            )
        if method == "DELETE":
            del self.files[rest[0]]
            return _json({"id": rest[0], "object": "file", "deleted": True})
        return _json(meta)

    # -- batches ----------------------------------------------------------------

    def _batches(
        self, request: ProviderRequest, method: str, rest: list[str], run: RunLine
    ) -> UpstreamResponse:
        if not rest:
            if method == "POST":
                return _json(self._create(request.body, run))
            return _json(_listing([self._read(b) for b in list(self.batches)]))
        if rest[0] not in self.batches:
            raise _missing("batch", rest[0])
        if len(rest) > 1 and rest[1] == "cancel":
            batch = self.batches[rest[0]]
            if batch["status"] == "validating":
                batch.update(status="cancelled", cancelled_at=int(time.time()))
                batch["_result"] = None
            return _json(_public(batch))
        return _json(self._read(rest[0]))

    def _create(self, body: dict[str, Any], run: RunLine) -> dict[str, Any]:
        input_id = body.get("input_file_id")
        if not isinstance(input_id, str) or input_id not in self.files:
            raise invalid(f"No such input file: {input_id}", "input_file_id")
        endpoint = body.get("endpoint")
        if endpoint not in BATCH_URLS:
            raise invalid(
                f"Invalid value for 'endpoint': expected one of {', '.join(BATCH_URLS)}.",
                "endpoint",
            )
        now = int(time.time())
        lines, failed = [], 0
        for raw in self.files[input_id][1].splitlines():
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                kind = BATCH_URLS[line["url"]]
                answer = json.loads(run(kind, line["body"]))
                lines.append(
                    {
                        "id": "batch_req_" + uuid.uuid4().hex[:24],
                        "custom_id": line.get("custom_id"),
                        "response": {
                            "status_code": 200,
                            "request_id": uuid.uuid4().hex,
                            "body": answer,
                        },
                        "error": None,
                    }
                )
            except (ValueError, KeyError, TypeError, UpstreamFailure) as e:
                failed += 1
                message = e.message if isinstance(e, UpstreamFailure) else str(e)
                custom = line.get("custom_id") if isinstance(line, dict) else None
                lines.append(
                    {
                        "id": "batch_req_" + uuid.uuid4().hex[:24],
                        "custom_id": custom,
                        "response": None,
                        "error": {"code": "invalid_request", "message": message},
                    }
                )
        output = "".join(json.dumps(x) + "\n" for x in lines).encode()
        out_meta = self._add_file("batch_output.jsonl", "batch_output", output)
        ident = "batch_" + uuid.uuid4().hex[:24]
        batch = {
            "id": ident,
            "object": "batch",
            "endpoint": endpoint,
            "errors": None,
            "input_file_id": input_id,
            "completion_window": body.get("completion_window", "24h"),
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": None,
            "expires_at": now + 86400,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
            "_result": (out_meta["id"], len(lines), failed),
        }
        self.batches[ident] = batch
        return _public(batch)

    def _read(self, ident: str) -> dict[str, Any]:
        """The batch, completed by this first read after it was created."""
        batch = self.batches[ident]
        result = batch.get("_result")
        if batch["status"] == "validating" and result is not None:
            out_id, total, failed = result
            now = int(time.time())
            batch.update(
                status="completed",
                output_file_id=out_id,
                in_progress_at=now,
                finalizing_at=now,
                completed_at=now,
                request_counts={"total": total, "completed": total - failed, "failed": failed},
            )
        return _public(batch)


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if not k.startswith("_")}


def _listing(data: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": False,
    }
