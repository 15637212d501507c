"""Malformed HTTP requests for the gateway, as raw bytes, from a seeded generator.

Each case is one whole request as it goes on the wire, so anything can be malformed: the
request line, the path's bytes, the headers' bytes, the declared length, the body. Kinds:

- `random-bytes`: not HTTP at all;
- `random-body`: a well-formed prediction whose body is random bytes, any content type;
- `truncated-body`, `mutated-body`: a valid PNG, JSON tensor or `.npy` body cut short or with
  bytes flipped, inserted or removed (the length declared matches what is sent);
- `wrong-content-type`: a valid body for one model under another type (the gateway's own
  batch format included);
- `bad-length`: huge, negative, non-numeric or repeated Content-Length headers;
- `short-body`: a Content-Length larger than what is sent (the client then leaves);
- `bad-utf8`: invalid UTF-8 and control bytes in the path and in header values;
- `random-query`: random query strings on predictions and on the read-only and register
  management routes (never a store archive's name: the model list must not change).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote_from_bytes

KINDS = (
    "random-bytes",
    "random-body",
    "truncated-body",
    "mutated-body",
    "wrong-content-type",
    "bad-length",
    "short-body",
    "bad-utf8",
    "random-query",
)
CONTENT_TYPES = (
    b"application/json",
    b"image/png",
    b"image/jpeg",
    b"application/x-npy",
    b"application/octet-stream",
    b"text/plain",
    b"application/x-prediction-batch",
    b"multipart/form-data; boundary=x",
    b"application/json; charset=utf-16",
    b"",
)


@dataclass(frozen=True)
class Case:
    kind: str
    raw: bytes
    # False when the request never completes (declared length > sent): no answer is due.
    answerable: bool = True


@dataclass(frozen=True)
class Bodies:
    """Valid bodies to start from: `png` for the image model, `tensor_json` and `npy` for
    the tensor model."""

    png: bytes
    tensor_json: bytes
    npy: bytes


def request(
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
    *,
    length: bytes | None = None,
) -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: gateway"]
    lines += [name + b": " + value for name, value in headers]
    if length is None:
        length = str(len(body)).encode()
    if length != b"-":
        lines.append(b"Content-Length: " + length)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class FuzzCases:
    """`count` cases, spread over `KINDS`, the same for the same `seed`."""

    def __init__(self, seed: int, bodies: Bodies, inference_key: str, management_key: str):
        self.rng = random.Random(seed)
        self.bodies = bodies
        self.inference = (b"Authorization", b"Bearer " + inference_key.encode())
        self.management = (b"Authorization", b"Bearer " + management_key.encode())

    def generate(self, count: int) -> Iterator[Case]:
        for index in range(count):
            kind = KINDS[index % len(KINDS)]
            yield Case(kind, *getattr(self, "_" + kind.replace("-", "_"))())

    # --- helpers ------------------------------------------------------------------------

    def _bytes(self, low: int, high: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(low, high))

    def _model_path(self) -> bytes:
        return self.rng.choice([b"/predictions/digits", b"/predictions/digits-tensor"])

    def _valid(self) -> tuple[bytes, bytes, bytes]:
        """(path, content type, body) of a valid prediction."""
        choice = self.rng.randrange(3)
        if choice == 0:
            return b"/predictions/digits", b"image/png", self.bodies.png
        if choice == 1:
            return b"/predictions/digits-tensor", b"application/json", self.bodies.tensor_json
        return b"/predictions/digits-tensor", b"application/x-npy", self.bodies.npy

    def _mutate(self, body: bytes) -> bytes:
        data = bytearray(body)
        for _ in range(self.rng.randint(1, 8)):
            op = self.rng.randrange(3)
            at = self.rng.randrange(len(data) + 1)
            if op == 0 and data:
                data[min(at, len(data) - 1)] = self.rng.randrange(256)
            elif op == 1:
                data[at:at] = self.rng.randbytes(self.rng.randint(1, 16))
            elif data:
                del data[at : at + self.rng.randint(1, 16)]
        return bytes(data)

    def _auth(self) -> list[tuple[bytes, bytes]]:
        return [self.inference]

    # --- kinds --------------------------------------------------------------------------

    def _random_bytes(self) -> tuple[bytes]:
        raw = self._bytes(1, 2048)
        if self.rng.random() < 0.5:  # looks like a request line, then garbage
            raw = self.rng.choice([b"POST ", b"GET ", b"PUT /", b"\x00", b"\r\n"]) + raw
        return (raw + b"\r\n\r\n",)

    def _random_body(self) -> tuple[bytes]:
        content_type = self.rng.choice(CONTENT_TYPES[:-1])
        headers = [*self._auth(), (b"Content-Type", content_type)]
        return (request(b"POST", self._model_path(), headers, self._bytes(0, 4096)),)

    def _truncated_body(self) -> tuple[bytes]:
        path, content_type, body = self._valid()
        cut = body[: self.rng.randrange(len(body))]
        headers = [*self._auth(), (b"Content-Type", content_type)]
        return (request(b"POST", path, headers, cut),)

    def _mutated_body(self) -> tuple[bytes]:
        path, content_type, body = self._valid()
        headers = [*self._auth(), (b"Content-Type", content_type)]
        return (request(b"POST", path, headers, self._mutate(body)),)

    def _wrong_content_type(self) -> tuple[bytes]:
        path, content_type, body = self._valid()
        wrong = self.rng.choice([t for t in CONTENT_TYPES if t != content_type])
        headers = [*self._auth(), *([(b"Content-Type", wrong)] if wrong else [])]
        return (request(b"POST", path, headers, body),)

    def _bad_length(self) -> tuple[bytes]:
        path, content_type, body = self._valid()
        length = self.rng.choice(
            [
                b"-1",
                b"-100000",
                b"99999999999999999999999999",
                str(2**63).encode(),
                str(2**64 + 5).encode(),
                b"1e6",
                b"0x10",
                b" ",
                b"12, 12",
                str(10**12).encode(),
                str(64 * 1024 * 1024).encode(),
            ]
        )
        headers = [*self._auth(), (b"Content-Type", content_type)]
        if self.rng.random() < 0.2:
            headers.append((b"Content-Length", str(len(body) + 1).encode()))
        return (request(b"POST", path, headers, body, length=length),)

    def _short_body(self) -> tuple[bytes, bool]:
        path, content_type, body = self._valid()
        headers = [*self._auth(), (b"Content-Type", content_type)]
        declared = str(len(body) + self.rng.randint(1, 100_000)).encode()
        return request(b"POST", path, headers, body, length=declared), False

    def _bad_utf8(self) -> tuple[bytes]:
        path, content_type, body = self._valid()
        junk = self.rng.choice([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x80", b"%ff%fe"])
        if self.rng.random() < 0.5:
            path = path + b"/" + junk + self._bytes(0, 8).replace(b" ", b"").replace(b"\r", b"")
            headers = [*self._auth(), (b"Content-Type", content_type)]
        else:
            name = self.rng.choice([b"X-Request-ID", b"Content-Type", b"Authorization", b"X-A"])
            value = junk + self._bytes(0, 32).replace(b"\r", b"").replace(b"\n", b"")
            headers = [*self._auth(), (b"Content-Type", content_type), (name, value)]
        return (request(b"POST", path, headers, body),)

    def _random_query(self) -> tuple[bytes]:
        raw_query = self._bytes(0, 64)
        if self.rng.random() < 0.5:
            query = quote_from_bytes(raw_query, safe="=&").encode()
        else:
            query = raw_query.replace(b" ", b"+").replace(b"\r", b"").replace(b"\n", b"")
        route = self.rng.randrange(4)
        if route == 0:
            path, content_type, body = self._valid()
            headers = [*self._auth(), (b"Content-Type", content_type)]
            return (request(b"POST", path + b"?" + query, headers, body),)
        if route == 1:
            return (request(b"GET", b"/models?" + query, [self.management]),)
        if route == 2:
            url = b"url=" + quote_from_bytes(self._bytes(1, 24)).encode() + b"&"
            return (request(b"POST", b"/models?" + url + query, [self.management]),)
        name = self.rng.choice([b"digits", b"digits-tensor", b"nope"])
        return (request(b"GET", b"/models/" + name + b"?" + query, [self.management]),)
