"""KeyRing: the 401/403 rules of issue 5."""

import pytest

from service.auth import KeyRing, Role, bearer_token
from service.errors import Forbidden, ManagementDisabled, Unauthorized

INF, MGMT = b"i" * 20, b"m" * 20


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic abc", None),
        ("Bearer abc", b"abc"),
        ("bearer abc", b"abc"),
        ("Bearer  abc ", b"abc"),
    ],
)
def test_bearer_token(header: str | None, token: bytes | None) -> None:
    assert bearer_token(header) == token


def test_inference_is_open_without_inference_keys() -> None:
    KeyRing((), (MGMT,)).check_inference(None)


def test_inference_needs_a_key_once_keys_are_set() -> None:
    ring = KeyRing((INF,), (MGMT,))
    ring.check_inference(INF)
    ring.check_inference(MGMT)  # a management key opens everything
    for token in (None, b"wrong", INF + b"x", INF[:-1]):
        with pytest.raises(Unauthorized):
            ring.check_inference(token)


def test_management_is_off_without_management_keys() -> None:
    with pytest.raises(ManagementDisabled) as info:
        KeyRing((INF,), ()).check_management(MGMT)
    assert info.value.status == 403 and "GATEWAY_MANAGEMENT_KEYS" in info.value.message


def test_management_rules() -> None:
    ring = KeyRing((INF,), (MGMT,))
    ring.check_management(MGMT)
    with pytest.raises(Unauthorized):
        ring.check_management(None)
    with pytest.raises(Unauthorized):
        ring.check_management(b"wrong")
    with pytest.raises(Forbidden) as info:
        ring.check_management(INF)
    assert info.value.status == 403


def test_roles() -> None:
    ring = KeyRing.from_strings(("i" * 20,), ("m" * 20,))
    assert ring.role_of(INF) is Role.INFERENCE and ring.role_of(MGMT) is Role.MANAGEMENT
    assert ring.role_of(b"") is None
