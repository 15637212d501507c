"""Hooks that serve the sentiment model with a tokenizer of its own (README, "Hooks").

The archive's `tensor` task keeps what these leave undefined: collation (reviews of different
lengths padded with <pad>, their true lengths passed as `lengths`). vocab.json and labels.json
travel in the archive as extra_files.
"""

import json
import re

import torch

WORD = re.compile(r"[a-z']+|[!?.,]")
VOCAB: dict[str, int] = {}
LABELS: list[str] = []


def setup(model, settings):
    VOCAB.update(json.loads(settings.extra_files["vocab.json"].read_text()))
    LABELS[:] = json.loads(settings.extra_files["labels.json"].read_text())


def decode(body, content_type):
    if not isinstance(body, str):
        raise ValueError("send the review as text/plain")
    words = WORD.findall(body.lower())
    if not words:
        raise ValueError("the review has no words")
    return torch.tensor([VOCAB.get(word, VOCAB["<unk>"]) for word in words])


def encode(row):
    probabilities = torch.softmax(row, dim=-1)
    best = int(probabilities.argmax())
    return {"label": LABELS[best], "probability": round(float(probabilities[best]), 6)}
