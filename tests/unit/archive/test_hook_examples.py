"""The README's text-model hook example (examples/text/tokenizer_hooks.py): the sentiment model
served with a tokenizer of its own, built and answered in-process by `python -m archive try`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from archive.build import build_models
from archive.cli import main

TEXT = Path(__file__).resolve().parents[3] / "examples" / "text"
SPEC = """
[[model]]
name = "sentiment-own-tokenizer"
model_file = "{text}/model.py"
model_class = "WordAVGModel"
model_kwargs = {{ vocab_size = 69, embedding_size = 16, output_size = 2, pad_idx = 1 }}
checkpoint = "{text}/sentiment.pt"
prepare = "{text}/train.py"
task = "tensor"
hooks = "{text}/tokenizer_hooks.py"
extra_files = ["{text}/vocab.json", "{text}/labels.json"]
examples = ["{text}/sample.txt"]

[model.input]
shape = [-1]
dtype = "int64"
pad_value = 1
lengths_arg = "lengths"
"""


def test_a_text_model_with_its_own_tokenizer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "models.toml"
    spec.write_text(SPEC.format(text=TEXT))
    (result,) = build_models(spec, tmp_path / "store")
    capsys.readouterr()
    review = "What a wonderful film, the acting was superb!"
    assert main(["try", str(result.path), review]) == 0
    answer = json.loads(capsys.readouterr().out)

    # The same steps by hand: the hooks' tokenizer, the model, a softmax.
    vocab = json.loads((TEXT / "vocab.json").read_text())
    words = ["what", "a", "wonderful", "film", ",", "the", "acting", "was", "superb", "!"]
    ids = torch.tensor([[vocab.get(w, vocab["<unk>"]) for w in words]])
    from examples.text.model import WordAVGModel

    model = WordAVGModel(vocab_size=69, embedding_size=16, output_size=2, pad_idx=1)
    model.load_state_dict(torch.load(TEXT / "sentiment.pt", weights_only=True)["model_state_dict"])
    with torch.inference_mode():
        probabilities = torch.softmax(model.eval()(ids)[0], dim=-1)
    assert answer == {"label": "positive", "probability": round(float(probabilities[1]), 6)}

    assert main(["try", str(result.path), "[1, 2, 3]"]) == 1
    assert json.loads(capsys.readouterr().out)["message"] == "send the review as text/plain"
