"""The gateway's scrubber keeps media types in TorchServe's messages and still hides paths."""

import pytest

from service.upstream_errors import sanitise


@pytest.mark.parametrize(
    "message",
    [
        "expected a float32 array of shape [4] as a JSON nested list or an application/x-npy body",
        "expected a JSON object or an application/x-npz body with 'x': float32 array",
        "expected text (text/plain or a JSON string)",
        "send image/png or image/jpeg; application/vnd.api+json is not read",
    ],
)
def test_media_types_stay(message: str) -> None:
    assert sanitise(message) == message


@pytest.mark.parametrize(
    ("message", "scrubbed"),
    [
        ("bad file /home/user/models/x.py here", "bad file <path> here"),
        ("read models/weights.pt", "read <path>"),
        ("read text/weights.pt or image/cat.png", "read <path> or <path>"),
        ("at /text/plain", "at <path>"),
        ("see application/x-npy/../../etc/passwd", "see <path>"),
        ("C:\\Users\\me\\model.pt failed", "<path> failed"),
    ],
)
def test_paths_are_still_hidden(message: str, scrubbed: str) -> None:
    assert sanitise(message) == scrubbed
