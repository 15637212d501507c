"""A TorchServe handler with no model: it answers each request with the size of its body.

TorchServe calls a module-level `handle(data, context)` with a batch (a list of dicts whose
"data" or "body" holds the request); it must return one item per request.
"""

import json
from typing import Any


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[str] | None:
    if data is None:  # TorchServe's initialisation call
        return None
    answers = []
    for request in data:
        body = request.get("data") or request.get("body") or b""
        answers.append(json.dumps({"echo_bytes": len(body)}))
    return answers
