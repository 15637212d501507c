"""The detector's hooks: a JSON {"pixels": [16 numbers]} or a raw little-endian float32 body in;
a list of {box, score, label} out, for the boxes whose best class scores at least min_score."""

import json

import numpy as np
import torch

LABELS: list[str] = []
SETTINGS = {"min_score": 0.0}


def setup(model, settings):
    # detector.json travels in the archive (extra_files): labels and the score threshold.
    config = json.loads(settings.extra_files["detector.json"].read_text())
    LABELS[:] = config["labels"]
    SETTINGS["min_score"] = config["min_score"]


def decode(body, content_type):
    if content_type == "application/json":
        pixels = body["pixels"] if isinstance(body, dict) else body
    elif content_type == "application/octet-stream":
        pixels = np.frombuffer(body, dtype="<f4").copy()  # bytes are read-only
    else:
        raise ValueError(f"send JSON or raw float32 bytes, not {content_type}")
    x = torch.as_tensor(np.asarray(pixels, dtype=np.float32))
    if tuple(x.shape) != (16,):
        raise ValueError(f"expected 16 values, got shape {list(x.shape)}")
    return x


def encode(row):
    scores, labels = row["scores"].max(dim=-1)
    return [
        {
            "box": [round(v, 6) for v in box.tolist()],
            "score": float(score),
            "label": LABELS[int(label)],
        }
        for box, score, label in zip(row["boxes"], scores, labels, strict=True)
        if float(score) >= SETTINGS["min_score"]
    ]
