"""FastAPI dependencies shared by the routes: the key checks.

`HTTPBearer(auto_error=False)` only reads the header and documents the scheme in OpenAPI
(the docs page's "Authorize" button); the decisions are `service.auth.KeyRing`'s.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.auth import bearer_token
from service.proxy import gateway_state

_bearer = HTTPBearer(auto_error=False, description="A gateway key (GATEWAY_*_KEYS).")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _token(request: Request) -> bytes | None:
    return bearer_token(request.headers.get("authorization"))


def check_inference_key(request: Request) -> None:
    """Raise `Unauthorized` unless the request may call inference."""
    gateway_state(request).keys.check_inference(_token(request))


async def require_inference_key(request: Request, _: Credentials) -> None:
    """`check_inference_key` as a dependency (documents the bearer scheme in OpenAPI)."""
    check_inference_key(request)


async def require_management_key(request: Request, _: Credentials) -> None:
    """Raise `ManagementDisabled`, `Unauthorized` or `Forbidden` unless it may manage."""
    gateway_state(request).keys.check_management(_token(request))


InferenceAccess = Depends(require_inference_key)
ManagementAccess = Depends(require_management_key)
