"""Shared pieces of the handler tests: fixed weights and a TorchServe-like context."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

MODELS_FILE = Path(__file__).with_name("tiny_models.py")


def affine_state_dict() -> dict[str, torch.Tensor]:
    """Fixed weights: outputs are exact sums, easy to check by hand."""
    return {
        "linear.weight": torch.tensor([[1.0, 2.0, 3.0, 4.0], [-1.0, 0.0, 1.0, 0.5]]),
        "linear.bias": torch.tensor([0.5, -2.0]),
    }


def affine_expected(x: list[float]) -> list[float]:
    w = affine_state_dict()["linear.weight"]
    b = affine_state_dict()["linear.bias"]
    return (torch.tensor(x) @ w.T + b).tolist()


class MockContext:
    """What TorchServe hands a handler, without Java (after ts/torch_handler/unit_tests)."""

    def __init__(self, model_dir: Path, model_yaml_config: dict[str, Any], gpu_id: Any = None):
        self.model_name = "test-model"
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": gpu_id, "batch_size": 8}
        self.model_yaml_config = model_yaml_config
        self.statuses: dict[int, tuple[int, str]] = {}
        # Per request index, as TorchServe's worker keeps them (ts/context.py, ts/service.py).
        self.request_headers: dict[int, dict[str, Any]] = {}
        self.response_headers: dict[int, dict[str, str]] = {}

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.statuses[idx] = (code, phrase)

    def get_request_header(self, idx: int, key: str) -> Any:
        return self.request_headers.get(idx, {}).get(key)

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self.response_headers.setdefault(idx, {})[key] = value

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.set_response_header(idx, "content-type", value)

    def with_body_content_types(self, *content_types: str) -> MockContext:
        """Say which Content-Type each request of the next batch came with."""
        self.request_headers = {
            i: {"body": {"content-type": kind}} for i, kind in enumerate(content_types)
        }
        return self
