"""The digits data as the server sees it: 8x8 grayscale PNGs, normalised like the handler does.

scikit-learn's digits have pixel values 0..16. They become uint8 images (``v / 16 * 255``,
rounded), which is exactly what a PNG body decodes to, and then ``(p / 255 - MEAN) / STD``, the
handler's normalisation with the spec's ``[model.image]`` mean and std. So training, the
in-process model and the served archive all see the same numbers.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch

MEAN = 0.5  # models.toml: [model.image] mean = [0.5]
STD = 0.5  # models.toml: [model.image] std = [0.5]
SPLIT_SEED = 0
HELD_OUT_FRACTION = 0.2


@dataclass(frozen=True)
class Split:
    """uint8 images [N, 8, 8] and their labels, for training and held out."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def load_split() -> Split:
    """The fixed, stratified train / held-out split of ``sklearn.datasets.load_digits``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = to_uint8(digits.images)
    train_x, test_x, train_y, test_y = train_test_split(
        images,
        digits.target,
        test_size=HELD_OUT_FRACTION,
        random_state=SPLIT_SEED,
        stratify=digits.target,
    )
    return Split(train_x, train_y, test_x, test_y)


def to_uint8(values: np.ndarray) -> np.ndarray:
    """sklearn's 0..16 pixel values to 0..255 uint8 pixels."""
    return np.rint(np.asarray(values, dtype=np.float64) / 16.0 * 255.0).astype(np.uint8)


def normalise(images: np.ndarray) -> torch.Tensor:
    """uint8 images [N, 8, 8] -> the model's input [N, 1, 8, 8], as the handler computes it."""
    pixels = torch.from_numpy(np.asarray(images, dtype=np.float32))[:, None]
    return (pixels / 255.0 - MEAN) / STD


def png_bytes(image: np.ndarray) -> bytes:
    """One uint8 image [8, 8] as a grayscale PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    # A 2-D uint8 array becomes a mode "L" image.
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
