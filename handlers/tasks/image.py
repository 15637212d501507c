"""``image-classification``: a PNG or JPEG in, the top-k classes out as ``{label: probability}``.

The image is converted to ``L``/``RGB``, resized, scaled to [0, 1] and normalised with the
configured mean/std (the ``image`` setting, ``ImageSpec``).
"""

from __future__ import annotations

import functools
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from handlers.errors import RequestError, SettingsError
from handlers.inputs import POSITIONAL, Call, InputSpec, Instance, collate
from handlers.tasks.base import Ranking, TaskKind, ranking_for

if TYPE_CHECKING:
    from handlers.settings import HandlerSettings

IMAGE_MODES = ("L", "RGB")
# Decompression bombs: refuse before decoding pixels (PIL's own limit only warns at 89 MP).
MAX_IMAGE_PIXELS = 40_000_000
IMAGE_FORMATS = ("PNG", "JPEG")


@dataclass(frozen=True)
class ImageSpec:
    """How an image body becomes a tensor: mode, size [h, w], normalisation per channel."""

    mode: str = "RGB"
    size: tuple[int, int] = (224, 224)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    @property
    def input(self) -> InputSpec:
        """The tensor one image becomes: float32 ``[C, H, W]``."""
        return InputSpec((self.channels, *self.size), "float32")


def parse_image(raw: Any) -> ImageSpec:
    """The ``image`` handler setting; SettingsError names the bad key."""
    if not isinstance(raw, Mapping) or set(raw) - {"mode", "size", "mean", "std"}:
        raise SettingsError("handler setting 'image' takes 'mode', 'size', 'mean' and 'std'")
    mode = raw.get("mode", "RGB")
    if mode not in IMAGE_MODES:
        raise SettingsError(f"handler setting 'image.mode' must be one of {', '.join(IMAGE_MODES)}")
    size = raw.get("size", [224, 224])
    if (
        not isinstance(size, Sequence)
        or isinstance(size, str)
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise SettingsError("handler setting 'image.size' must be a list of positive integers")
    if len(size) != 2:
        raise SettingsError("handler setting 'image.size' must be [height, width]")
    channels = 1 if mode == "L" else 3
    mean = _float_list(raw.get("mean", [0.0] * channels), "image.mean")
    std = _float_list(raw.get("std", [1.0] * channels), "image.std")
    for name, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise SettingsError(f"'image.{name}' needs 1 or {channels} values for mode {mode}")
    if any(s == 0 for s in std):
        raise SettingsError("'image.std' values must be non-zero")
    return ImageSpec(mode, (size[0], size[1]), tuple(mean), tuple(std))


class ImageClassificationTask:
    """A PNG/JPEG in, the top-k classes out as ``{label: probability}``, most likely first."""

    def __init__(
        self,
        spec: ImageSpec,
        labels: Sequence[str] | None = None,
        scores: str = "logits",
        top_k: int = 5,
        output: str | int | None = None,
    ) -> None:
        self.spec = spec
        self.ranking = Ranking(labels, scores, top_k, output, "image-classification")
        self.inputs = (spec.input,)

    @property
    def labels(self) -> list[str] | None:
        return list(self.ranking.labels) if self.ranking.labels is not None else None

    def decode(self, payload: Any) -> Instance:
        return {POSITIONAL: decode_image(payload, self.spec)}

    def collate(self, instances: Sequence[Instance]) -> list[Call]:
        return collate(instances, self.inputs)  # one shape: one stacked call

    def encode(self, output: Any) -> dict[str, float]:
        return self.ranking.encode(output)

    def encode_rows(self, output: Any, count: int) -> list[dict[str, float]] | None:
        return self.ranking.encode_rows(output, count)

    def example_payloads(self, generator: np.random.Generator) -> list[Any]:
        from PIL import Image

        height, width = self.spec.size
        shape = (height, width) if self.spec.mode == "L" else (height, width, 3)
        pixels = generator.integers(0, 256, shape, dtype=np.uint8)
        bodies = []
        for fmt in ("PNG", "JPEG"):
            buffer = io.BytesIO()
            Image.fromarray(pixels, mode=self.spec.mode).save(buffer, format=fmt)
            bodies.append(bytearray(buffer.getvalue()))
        return bodies

    def check_answer(self, answer: Any) -> None:
        self.ranking.check_answer(answer)


def decode_image(payload: Any, spec: ImageSpec) -> torch.Tensor:
    """A normalised ``[C, H, W]`` float32 tensor from PNG or JPEG bytes."""
    from PIL import Image, UnidentifiedImageError

    expected = (
        f"a PNG or JPEG image (it is converted to {spec.mode}, {spec.size[0]}x{spec.size[1]})"
    )
    if not isinstance(payload, bytes | bytearray) or not payload:
        raise RequestError(f"expected {expected} as the request body")
    try:
        opened = Image.open(io.BytesIO(payload))
        if opened.format not in IMAGE_FORMATS:
            raise RequestError(f"expected {expected}; got {opened.format or 'an unknown'} format")
        width, height = opened.size
        if width * height > MAX_IMAGE_PIXELS:
            raise RequestError(f"image of {width}x{height} pixels is too large")
        # convert() of an image already in spec.mode only copies it: use it as it is.
        image = opened.convert(spec.mode) if opened.mode != spec.mode else opened
        height_out, width_out = spec.size
        if image.size != (width_out, height_out):
            image = image.resize((width_out, height_out), Image.Resampling.BILINEAR)
        # The raw bytes (this loads the image) rather than np.asarray(image), which goes
        # through PIL's __array_interface__: ~2 us (5%) less for an 8x8 PNG.
        pixels = np.frombuffer(image.tobytes(), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise RequestError(f"expected {expected}; the body could not be decoded") from None
    channels = pixels.reshape(height_out, width_out, spec.channels).transpose(2, 0, 1)
    scale, offset = _normalisation(spec.mean, spec.std)
    return torch.from_numpy(np.ascontiguousarray(channels * scale + offset))


@functools.lru_cache(maxsize=16)
def _normalisation(
    mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """``(pixels / 255 - mean) / std`` as ``pixels * scale + offset``, per channel."""
    mean_ = np.asarray(mean, dtype=np.float64).reshape(-1, 1, 1)
    std_ = np.asarray(std, dtype=np.float64).reshape(-1, 1, 1)
    return (1.0 / (255.0 * std_)).astype(np.float32), (-mean_ / std_).astype(np.float32)


def _float_list(value: Any, name: str) -> list[float]:
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise SettingsError(f"handler setting '{name}' must be a list of numbers")
    return [float(v) for v in value]


def _build(settings: HandlerSettings, base_dir: Path) -> ImageClassificationTask:
    assert settings.image is not None
    ranking = ranking_for(settings, base_dir)
    return ImageClassificationTask(
        settings.image, ranking.labels, ranking.scores, ranking.top_k, ranking.output
    )


KIND = TaskKind(
    name="image-classification",
    uses=frozenset({"image", "labels", "scores", "top_k"}),
    needs=(("image",),),
    build=_build,
)
