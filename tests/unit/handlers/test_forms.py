"""Every form a model may take, through the handler's own loading path, with exact outputs:
variable-length inputs (grouped by shape or padded with lengths), named inputs, text, another
method, structured outputs, and strict=false warm starts."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from handlers.batch import Failure
from handlers.errors import ModelBuildError, SettingsError
from handlers.inputs import InputSpec, collate
from handlers.predictor import Predictor, load_predictor
from handlers.settings import HandlerSettings
from handlers.tasks.text import tokenize
from tests.unit.handlers import tiny_models
from tests.unit.handlers.helpers import MODELS_FILE

VOCAB = {"<unk>": 0, "<pad>": 1, "good": 2, "bad": 3, "film": 4, "!": 5}
EMBEDDING = torch.tensor(
    [[0.0, 0.0], [9.0, 9.0], [1.0, 0.5], [-1.0, 0.25], [0.5, -0.5], [0.25, 2.0]]
)
FC_WEIGHT = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
FC_BIAS = torch.tensor([0.0, 0.5, -0.5])


def word_average_weights() -> dict[str, torch.Tensor]:
    return {"embedding.weight": EMBEDDING, "fc.weight": FC_WEIGHT, "fc.bias": FC_BIAS}


def word_average_logits(ids: list[int]) -> list[float]:
    """The model by hand: the mean of the ids' embeddings, then the linear layer."""
    mean = EMBEDDING[ids].mean(dim=0)
    return (FC_WEIGHT @ mean + FC_BIAS).tolist()


def load(tmp_path: Path, weights: dict[str, torch.Tensor], **settings: Any) -> Predictor:
    shutil.copy(MODELS_FILE, tmp_path / "model.py")
    torch.save(weights, tmp_path / "weights.pt")
    (tmp_path / "vocab.json").write_text(json.dumps(VOCAB))
    (tmp_path / "labels.json").write_text(json.dumps(["pos", "neg", "meh"]))
    raw = {"model_file": "model.py", "checkpoint": "weights.pt", **settings}
    return load_predictor(HandlerSettings.from_dict(raw), tmp_path)


def word_average(tmp_path: Path, **input_: Any) -> Predictor:
    return load(
        tmp_path,
        word_average_weights(),
        model_class="WordAverage",
        input={"shape": [-1], "dtype": "int64", **input_},
    )


SEQUENCES = [[2, 3, 4], [2, 2, 3, 4, 5], [4, 4, 4], [5, 4, 3, 2, 2, 3, 4, 5, 2]]


def test_lengths_in_one_batch_run_one_call_per_length_each_as_alone(tmp_path: Path) -> None:
    predictor = word_average(tmp_path)
    model_class = type(predictor.model)
    model_class.calls = 0
    answers = predictor.predict(SEQUENCES)
    assert model_class.calls == 3  # lengths 3, 5 and 9
    for ids, answer in zip(SEQUENCES, answers, strict=True):
        assert answer == pytest.approx(word_average_logits(ids), abs=1e-6)
        assert answer == predictor.predict([ids])[0]


def test_pad_value_and_lengths_arg_run_one_padded_call(tmp_path: Path) -> None:
    predictor = word_average(tmp_path, pad_value=1, lengths_arg="lengths")
    model_class = type(predictor.model)
    model_class.calls = 0
    answers = predictor.predict(SEQUENCES)
    assert model_class.calls == 1
    for ids, answer in zip(SEQUENCES, answers, strict=True):
        assert answer == pytest.approx(word_average_logits(ids), abs=1e-6)


def test_padding_fills_with_pad_value_and_passes_lengths_per_variable_dim() -> None:
    spec = InputSpec((-1, 2, -1), "float32", pad_value=-1.0, lengths_arg="sizes")
    first, second = torch.ones(1, 2, 3), torch.full((2, 2, 1), 2.0)
    (call,) = collate([{"": first}, {"": second}], [spec])
    (batch,) = call.args
    assert batch.shape == (2, 2, 2, 3)
    assert call.kwargs["sizes"].tolist() == [[1, 3], [2, 1]]
    assert call.kwargs["sizes"].dtype == torch.int64
    assert batch[0, 1].tolist() == [[-1.0] * 3, [-1.0] * 3]
    assert batch[1, :, :, 0].tolist() == [[2.0, 2.0], [2.0, 2.0]]
    assert batch[1, :, :, 1:].eq(-1.0).all()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], r"expected a int64 array of shape \[-1\] \(-1: any size\); got shape \[0\]"),
        ([[2, 3]], r"got shape \[1, 2\]"),
        ([2] * 11, "of at most 10 elements; got 11"),
        ([2, 6], r"values must lie in \[0, 5\]; got 6"),
        ([-1, 2], r"values must lie in \[0, 5\]; got -1"),
    ],
)
def test_variable_inputs_are_bounded(tmp_path: Path, body: Any, message: str) -> None:
    predictor = word_average(tmp_path, max_elements=10, range=[0, 5])
    (outcome,) = predictor.predict([body])
    assert isinstance(outcome, Failure) and outcome.code == 400
    import re

    assert re.search(message, outcome.message), outcome.message


def test_the_default_bound_is_a_million_elements(tmp_path: Path) -> None:
    predictor = word_average(tmp_path)
    (outcome,) = predictor.predict([np.zeros(1_048_577, dtype=np.int64).tolist()])
    assert isinstance(outcome, Failure) and "at most 1,048,576 elements" in outcome.message


def npz(**arrays: np.ndarray) -> bytearray:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return bytearray(buffer.getvalue())


def masked(tmp_path: Path) -> Predictor:
    return load(
        tmp_path,
        {"scale": torch.tensor(3.0)},
        model_class="Masked",
        inputs=[
            {"name": "x", "shape": [-1]},
            {"name": "mask", "shape": [-1], "dtype": "float32", "range": [0, 1]},
        ],
    )


def test_named_inputs_as_a_json_object_or_an_npz_go_to_the_model_by_keyword(
    tmp_path: Path,
) -> None:
    predictor = masked(tmp_path)
    bodies = [
        {"x": [1.0, 2.0, 4.0], "mask": [1, 0, 1]},
        npz(x=np.array([1.0, 2.0, 4.0, 8.0], dtype=np.float32), mask=np.array([0.0, 1, 1, 1])),
        json.dumps({"mask": [1], "x": [0.5]}).encode(),
    ]
    assert predictor.predict(bodies) == [[5.0, 15.0], [14.0, 42.0], [0.5, 1.5]]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"x": [1.0]}, "missing 'mask'"),
        ({"x": [1.0], "mask": [1.0], "y": [2]}, "unexpected 'y'"),
        ({"x": [1.0], "mask": [[1.0]]}, r"for 'mask'; got shape \[1, 1\]"),
        ({"x": [1.0], "mask": [2.0]}, r"values of 'mask' must lie in \[0, 1\]"),
        ([1.0, 2.0], "got a JSON list"),
        (b"PK\x03\x04broken", "the .npz body is invalid"),
    ],
)
def test_named_inputs_say_what_is_expected(tmp_path: Path, body: Any, message: str) -> None:
    import re

    (outcome,) = masked(tmp_path).predict([body])
    assert isinstance(outcome, Failure) and outcome.code == 400
    assert re.search(message, outcome.message), outcome.message
    if "expected a JSON object" in outcome.message:  # the whole body's form: all names listed
        assert "'x': float32 array of shape [-1]" in outcome.message
        assert "'mask': float32 array of shape [-1]" in outcome.message


def test_another_method_with_constant_keyword_arguments(tmp_path: Path) -> None:
    predictor = load(
        tmp_path,
        {"step": torch.tensor(0.5)},
        model_class="Generator",
        method="generate",
        method_kwargs={"max_new_tokens": 3},
        input={"shape": [2]},
    )
    assert predictor.predict([[1.0, 2.0], [0.0, -1.0]]) == [[2.5, 3.0, 3.5], [-0.5, 0.0, 0.5]]


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ("forward", "Generator has no forward method to call on a batch"),
        (
            "sample",
            "Generator has no method 'sample' to call on a batch",
        ),
    ],
)
def test_a_missing_method_is_named_with_the_methods_there_are(
    tmp_path: Path, method: str, message: str
) -> None:
    with pytest.raises(ModelBuildError, match="set `method` to one of its methods: generate") as e:
        load(
            tmp_path,
            {"step": torch.tensor(0.5)},
            model_class="Generator",
            method=method,
            input={"shape": [2]},
        )
    assert message in str(e.value)


DICT_WEIGHTS = {
    "linear.weight": torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]]),
    "linear.bias": torch.zeros(3),
}


def test_a_tensor_model_answers_each_row_of_every_output_in_its_structure(tmp_path: Path) -> None:
    predictor = load(tmp_path, DICT_WEIGHTS, model_class="DictClassifier", input={"shape": [4]})
    answers = predictor.predict([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 1.0]])
    assert answers == [
        {"logits": [1.0, 2.0, 3.0], "embedding": [2.0, 4.0, 6.0, 8.0]},
        {"logits": [0.0, 0.0, 0.0], "embedding": [0.0, 0.0, 0.0, 2.0]},
    ]
    picked = load(
        tmp_path, DICT_WEIGHTS, model_class="DictClassifier", input={"shape": [4]}, output="logits"
    )
    assert picked.predict([[1.0, 2.0, 3.0, 4.0]]) == [[1.0, 2.0, 3.0]]


def image_dict_classifier(tmp_path: Path, **settings: Any) -> Predictor:
    return load(
        tmp_path,
        DICT_WEIGHTS,
        model_class="DictClassifier",
        task="image-classification",
        image={"mode": "L", "size": [2, 2]},
        labels="labels.json",
        top_k=2,
        **settings,
    )


def test_a_classifier_ranks_the_output_it_is_told_to(tmp_path: Path) -> None:
    predictor = image_dict_classifier(tmp_path, output="logits")
    bodies = predictor.task.example_payloads(np.random.default_rng(0))
    answers = predictor.predict(bodies)
    pixels = torch.stack([predictor.task.decode(body)[""] for body in bodies]).flatten(1)
    probabilities = torch.softmax(pixels[:, :3], dim=1)
    for row, answer in zip(probabilities, answers, strict=True):
        values, indices = torch.topk(row, 2)
        labels = ["pos", "neg", "meh"]
        assert answer == {
            labels[i]: v for v, i in zip(values.tolist(), indices.tolist(), strict=True)
        }


def test_a_classifier_returning_a_dict_without_output_says_what_to_set(tmp_path: Path) -> None:
    predictor = image_dict_classifier(tmp_path)
    outcomes = predictor.predict(predictor.task.example_payloads(np.random.default_rng(0)))
    for outcome in outcomes:
        assert isinstance(outcome, Failure) and outcome.code == 500
        assert "set `output`" in outcome.message
        assert "dict with keys logits, embedding" in outcome.message


def test_output_naming_a_missing_key_lists_the_keys(tmp_path: Path) -> None:
    predictor = image_dict_classifier(tmp_path, output="scores")
    (outcome, _) = predictor.predict(predictor.task.example_payloads(np.random.default_rng(0)))
    assert isinstance(outcome, Failure)
    assert "no key 'scores'" in outcome.message and "logits, embedding" in outcome.message


def text_classifier(tmp_path: Path, **settings: Any) -> Predictor:
    text = {"vocab": "vocab.json", "unk_token": "<unk>", "max_tokens": 9}
    text.update(settings.pop("text", {}))
    return load(
        tmp_path,
        word_average_weights(),
        model_class="WordAverage",
        task="text-classification",
        text=text,
        labels="labels.json",
        top_k=3,
        **settings,
    )


def ranked(logits: list[float]) -> dict[str, float]:
    probabilities = torch.softmax(torch.tensor(logits), dim=0)
    order = torch.argsort(probabilities, descending=True).tolist()
    return {["pos", "neg", "meh"][i]: probabilities[i].item() for i in order}


def test_text_is_tokenised_lowercased_and_mapped_with_unknown_words_to_unk(
    tmp_path: Path,
) -> None:
    assert tokenize("Good film, BAD film!") == ["good", "film", ",", "bad", "film", "!"]
    predictor = text_classifier(tmp_path)
    answers = predictor.predict(["Good film!", "bad, BAD film", bytearray(b"good")])
    assert answers[0] == pytest.approx(ranked(word_average_logits([2, 4, 5])))
    assert answers[1] == pytest.approx(ranked(word_average_logits([3, 0, 3, 4])))  # "," -> unk
    assert answers[2] == pytest.approx(ranked(word_average_logits([2])))
    assert list(answers[0]) == list(ranked(word_average_logits([2, 4, 5])))


def test_text_and_token_ids_give_the_same_answer_padded_or_not(tmp_path: Path) -> None:
    plain = text_classifier(tmp_path)
    padded = text_classifier(
        tmp_path, text={"pad_token": "<pad>"}, input={"shape": [-1], "lengths_arg": "lengths"}
    )
    model_class = type(padded.model)
    model_class.calls = 0
    bodies: list[Any] = ["good film", [2, 4], "bad bad bad film !", [5, 4, 3, 2, 2, 3, 4, 5, 2]]
    answers = padded.predict(bodies)
    assert model_class.calls == 1
    for answer, alone in zip(answers, plain.predict(bodies), strict=True):
        assert list(answer) == list(alone)
        assert answer == pytest.approx(alone, abs=1e-6)
    assert answers[0] == answers[1]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([2, 6], r"values must lie in \[0, 5\]; got 6"),
        ("   ", "no words"),
        ("good " * 10, "the text has 10 tokens; this model takes at most 9"),
        ({"text": "good"}, "got a JSON dict"),
        (bytearray(b"\xff\xfe"), "expected UTF-8 text"),
    ],
)
def test_text_requests_that_cannot_be_read_say_why(tmp_path: Path, body: Any, message: str) -> None:
    import re

    (outcome,) = text_classifier(tmp_path).predict([body])
    assert isinstance(outcome, Failure) and outcome.code == 400
    assert re.search(message, outcome.message), outcome.message


def test_text_without_unk_token_names_the_unknown_word(tmp_path: Path) -> None:
    predictor = text_classifier(tmp_path, text={"unk_token": None})
    (outcome,) = predictor.predict(["good popcorn"])
    assert isinstance(outcome, Failure) and "'popcorn' is not in the vocabulary" in outcome.message


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"text": {"pad_token": "<pad>"}}, "pads only with 'input.lengths_arg'"),
        ({"text": {"unk_token": "<nope>"}}, "'<nope>' is not in the vocabulary"),
        ({"input": {"shape": [-1, 2], "dtype": "int64"}}, "must have shape \\[-1\\]"),
        ({"image": {"mode": "L"}}, "does not use: image"),
    ],
)
def test_text_settings_are_checked(tmp_path: Path, settings: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        text_classifier(tmp_path, **settings)


def test_warm_start_initialises_what_is_missing_the_same_every_time(tmp_path: Path) -> None:
    body = {k: v for k, v in tiny_models.WarmStart().state_dict().items() if k.startswith("body")}
    first = load(
        tmp_path, body, model_class="WarmStart", strict=False, init_seed=3, input={"shape": [4]}
    )
    torch.manual_seed(12345)  # the caller's random state plays no part
    second = load(
        tmp_path, body, model_class="WarmStart", strict=False, init_seed=3, input={"shape": [4]}
    )
    assert first.report.missing == ("head.weight", "head.bias")
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key])
    other = load(
        tmp_path, body, model_class="WarmStart", strict=False, init_seed=4, input={"shape": [4]}
    )
    assert not torch.equal(other.model.head.weight, first.model.head.weight)
    assert torch.equal(other.model.body.weight, first.model.body.weight)
