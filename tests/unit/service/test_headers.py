"""Which headers cross the gateway, and the request id."""

from service.headers import downstream_response_headers, request_id_from, upstream_request_headers


def test_hop_by_hop_and_credentials_are_not_forwarded_upstream() -> None:
    headers = [
        (b"host", b"gw"),
        (b"content-type", b"application/json"),
        (b"content-length", b"3"),
        (b"connection", b"keep-alive, x-private"),
        (b"keep-alive", b"timeout=5"),
        (b"x-private", b"1"),
        (b"te", b"trailers"),
        (b"transfer-encoding", b"chunked"),
        (b"upgrade", b"h2c"),
        (b"proxy-authorization", b"Basic x"),
        (b"authorization", b"Bearer secret"),
        (b"x-request-id", b"client-id"),
        (b"accept", b"*/*"),
    ]
    assert upstream_request_headers(headers, b"rid") == [
        (b"content-type", b"application/json"),
        (b"accept", b"*/*"),
        (b"x-request-id", b"rid"),
    ]


def test_upstream_response_headers_are_filtered_case_insensitively() -> None:
    headers = [
        (b"Content-Type", b"image/png"),
        (b"Connection", b"close, X-Hop"),
        (b"X-Hop", b"1"),
        (b"Transfer-Encoding", b"chunked"),
        (b"content-length", b"10"),
        (b"x-request-id", b"torchserve-id"),
        (b"cache-control", b"no-cache"),
    ]
    assert downstream_response_headers(headers) == [
        (b"Content-Type", b"image/png"),
        (b"cache-control", b"no-cache"),
    ]


def test_a_plain_client_request_id_is_kept() -> None:
    assert request_id_from([(b"x-request-id", b"abc-123_x.y:z")]) == b"abc-123_x.y:z"


def test_a_missing_or_unsafe_request_id_is_replaced() -> None:
    for headers in ([], [(b"x-request-id", b"a\r\nb")], [(b"x-request-id", b"x" * 200)]):
        rid = request_id_from(headers)
        assert len(rid) == 32 and rid.isalnum()
    assert request_id_from([]) != request_id_from([])
