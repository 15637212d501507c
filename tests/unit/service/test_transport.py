"""aiohttp's exceptions mapped to the httpx exception that says what happened."""

import aiohttp
import httpx
import pytest
from aiohttp.client_reqrep import ConnectionKey

from service.transport import map_aiohttp_error

KEY = ConnectionKey("127.0.0.1", 1, False, True, None, None, None)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "refused")),
            httpx.ConnectError,
        ),
        (aiohttp.ConnectionTimeoutError("connect"), httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError("read"), httpx.ReadTimeout),
        (TimeoutError(), httpx.TimeoutException),
        (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError),
        (aiohttp.ClientPayloadError("truncated"), httpx.ReadError),
        (aiohttp.ClientOSError(104, "reset"), httpx.NetworkError),
        (ConnectionResetError(104, "reset"), httpx.NetworkError),
        (aiohttp.ClientError("other"), httpx.TransportError),
    ],
)
def test_map_aiohttp_error(error: BaseException, expected: type[Exception]) -> None:
    mapped = map_aiohttp_error(error)
    assert type(mapped) is expected
