"""Which headers cross the gateway, and the request id that follows each request.

Headers are handled as the raw `(bytes, bytes)` pairs of ASGI and httpx, lower-case names,
against precomputed sets: no per-request parsing beyond one pass over the list.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from handlers import envelope

REQUEST_ID_HEADER = b"x-request-id"

# RFC 9110 section 7.6.1 (Connection) and RFC 9112: meaningful for one hop only.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Never forwarded to TorchServe: hop-by-hop ones, those the client library sets itself
# (host, content-length), the gateway's own credential, and the request id (set apart).
_DROP_UPSTREAM = HOP_BY_HOP | {
    b"host",
    b"content-length",
    b"authorization",
    b"expect",
    REQUEST_ID_HEADER,
}
# Never passed back to the client: hop-by-hop ones, those uvicorn sets itself,
# TorchServe's own request id (the client gets the gateway's), and the handler's note to
# the gateway that it reads batch envelopes (service.batching).
_DROP_DOWNSTREAM = HOP_BY_HOP | {
    b"content-length",
    b"date",
    b"server",
    REQUEST_ID_HEADER,
    envelope.ACCEPTS_HEADER.encode(),
}

# A client's X-Request-ID is kept only if it is short and plain (it goes into logs).
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names listed in any Connection header: hop-by-hop too (RFC 9110 7.6.1)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(tokens)


def _filter(
    headers: list[tuple[bytes, bytes]], drop: frozenset[bytes]
) -> list[tuple[bytes, bytes]]:
    named = _connection_tokens(headers)
    if named:
        drop = drop | named
    return [(name, value) for name, value in headers if name.lower() not in drop]


def upstream_request_headers(
    headers: list[tuple[bytes, bytes]], request_id: bytes
) -> list[tuple[bytes, bytes]]:
    """The client's headers to send to TorchServe, with the gateway's `x-request-id`."""
    kept = _filter(headers, _DROP_UPSTREAM)
    kept.append((REQUEST_ID_HEADER, request_id))
    return kept


def downstream_response_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """TorchServe's response headers to pass back to the client (content type included)."""
    return _filter(headers, _DROP_DOWNSTREAM)


def request_id_from(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The client's `x-request-id` if it is acceptable, else a new random one (32 hex)."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:  # ASGI servers lower-case header names
            if _REQUEST_ID.fullmatch(value) is not None:
                return value
            break
    return os.urandom(16).hex().encode()  # a uuid4's randomness at a quarter of its cost
