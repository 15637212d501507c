"""Bearer keys: who may call inference and management (issue 5, part 1).

Rules:
- inference (`/predictions/...`): open when GATEWAY_INFERENCE_KEYS is empty; otherwise an
  inference or a management key is needed (401 without one or with a wrong one);
- management (`/models...`): always needs a management key. With none configured the API
  is off (403 `ManagementDisabled`, saying how to turn it on); an inference key is 403
  `Forbidden`; no key or a wrong one is 401.

Keys are compared with `hmac.compare_digest` against every configured key (no early exit),
so the time taken says nothing about which key, or how much of one, matched. Keys are never
logged or echoed.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import Enum

from service.errors import Forbidden, ManagementDisabled, Unauthorized


class Role(Enum):
    INFERENCE = "inference"
    MANAGEMENT = "management"


def bearer_token(authorization: str | None) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` header value, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token.encode("utf-8", "surrogateescape")


def _matches(token: bytes, keys: tuple[bytes, ...]) -> bool:
    found = False
    for key in keys:
        found |= hmac.compare_digest(token, key)
    return found


@dataclass(frozen=True)
class KeyRing:
    """The configured keys, as bytes, ready to compare."""

    inference: tuple[bytes, ...]
    management: tuple[bytes, ...]

    @classmethod
    def from_strings(cls, inference: tuple[str, ...], management: tuple[str, ...]) -> KeyRing:
        return cls(tuple(k.encode() for k in inference), tuple(k.encode() for k in management))

    def role_of(self, token: bytes) -> Role | None:
        """The role `token` grants (management wins), or None for an unknown token."""
        is_management = _matches(token, self.management)
        is_inference = _matches(token, self.inference)
        if is_management:
            return Role.MANAGEMENT
        if is_inference:
            return Role.INFERENCE
        return None

    def check_inference(self, token: bytes | None) -> None:
        """Allow or raise `Unauthorized` for an inference route."""
        if not self.inference:
            return
        if token is None or self.role_of(token) is None:
            raise Unauthorized()

    def check_management(self, token: bytes | None) -> None:
        """Allow or raise `ManagementDisabled`, `Unauthorized` or `Forbidden`."""
        if not self.management:
            raise ManagementDisabled()
        if token is None:
            raise Unauthorized()
        role = self.role_of(token)
        if role is None:
            raise Unauthorized()
        if role is not Role.MANAGEMENT:
            raise Forbidden("An inference key does not give access to the management API.")
