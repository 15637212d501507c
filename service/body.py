"""Reading a request body within GATEWAY_MAX_BODY_BYTES.

A declared Content-Length over the limit is refused before a byte is read (uvicorn only
sends `100 Continue` once the app reads). A chunked body is counted as it arrives and
refused at the first byte over the limit, so the gateway holds at most `limit` bytes of
any body; the 413 closes the connection so the rest is never read.
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope

from service.errors import InvalidRequest, PayloadTooLarge


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is over the gateway's limit of {limit} bytes.")


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length, None if absent; `InvalidRequest` if malformed."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            if not value.isdigit():
                raise InvalidRequest("Invalid Content-Length header.")
            return int(value)
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, at most `limit` bytes.

    Raises `PayloadTooLarge` (413) as soon as the declared or counted size is over `limit`,
    and `starlette.requests.ClientDisconnect` if the client goes away mid-body.
    """
    length = declared_length(scope)
    if length is not None and length > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)
