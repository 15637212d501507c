import numpy as np
import pytest
import torch

from handlers.batch import Failure, run_batch, split_rows
from handlers.model_loading import build_model, import_model_class
from handlers.settings import ImageSpec, InputSpec
from handlers.tasks import ImageClassificationTask, Task, TensorTask
from tests.unit.handlers.helpers import MODELS_FILE, affine_expected, affine_state_dict

CPU = torch.device("cpu")
TASK = TensorTask(InputSpec((4,), "float32"))


def model(name: str) -> torch.nn.Module:
    built, _ = build_model(import_model_class(MODELS_FILE, name), affine_state_dict())
    return built


def test_a_bad_request_fails_alone() -> None:
    good = [1.0, 2.0, 3.0, 4.0]
    outcomes = run_batch(model("Affine"), TASK, [good, [1.0, 2.0], good], CPU)
    assert outcomes[0] == affine_expected(good) == outcomes[2]
    assert isinstance(outcomes[1], Failure) and outcomes[1].code == 400
    assert "shape [4]" in outcomes[1].message


def test_a_poisonous_input_fails_alone_after_the_batch_fails() -> None:
    good, poison = [1.0, 1.0, 1.0, 1.0], [-1.0, 0.0, 0.0, 0.0]
    outcomes = run_batch(model("RefusesNegative"), TASK, [good, poison, good], CPU)
    assert outcomes[0] == affine_expected(good) == outcomes[2]
    assert isinstance(outcomes[1], Failure) and outcomes[1].code == 500
    assert "negative input" in outcomes[1].message


def test_wrong_batch_size_from_the_model_fails_every_request() -> None:
    outcomes = run_batch(model("WrongBatch"), TASK, [[0.0] * 4, [1.0] * 4], CPU)
    assert all(isinstance(o, Failure) and o.code == 500 for o in outcomes)
    assert "for a batch of 1" in outcomes[0].message


def test_all_bad_requests_never_reach_the_model() -> None:
    outcomes = run_batch(model("Affine"), TASK, ["x", None], CPU)
    assert [o.code for o in outcomes] == [400, 400]


def test_nested_outputs_are_split_by_row() -> None:
    out = {"a": torch.arange(4).reshape(2, 2), "b": (torch.tensor([1, 2]), torch.tensor([3, 4]))}
    rows = split_rows(out, 2)
    assert rows[1]["a"].tolist() == [2, 3]
    assert [t.item() for t in rows[0]["b"]] == [1, 3]


IMAGE = ImageSpec("L", (8, 8), (0.5,), (0.5,))


@pytest.mark.parametrize(
    "task",
    [
        TASK,
        TensorTask(InputSpec((4,), "bfloat16")),
        ImageClassificationTask(IMAGE, labels=list("abcdefghij"), top_k=3),
        ImageClassificationTask(IMAGE, labels=None, top_k=20),  # k > classes: all, numbered
        ImageClassificationTask(IMAGE, labels=list("abc"), top_k=5),  # labels < classes
        ImageClassificationTask(IMAGE, scores="probabilities", top_k=2),
    ],
    ids=["tensor", "tensor-bf16", "image", "image-no-labels", "image-few-labels", "image-probs"],
)
@pytest.mark.parametrize("shape", [(5, 10), (5, 2, 5), (1, 10)])
def test_a_batch_is_encoded_at_once_as_row_by_row(task: Task, shape: tuple[int, ...]) -> None:
    output = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))
    if task is not TASK and isinstance(task, TensorTask):
        output = output.bfloat16()
    at_once = task.encode_rows(output, shape[0])
    assert at_once is not None
    assert at_once == [task.encode(row) for row in split_rows(output, shape[0])]


@pytest.mark.parametrize("output", [(torch.zeros(2, 3),), {"a": torch.zeros(2, 3)}, "x"])
def test_outputs_a_classifier_cannot_rank_are_encoded_row_by_row(output: object) -> None:
    image = ImageClassificationTask(IMAGE)
    assert image.encode_rows(output, 2) is None
    assert TASK.encode_rows("x", 2) is None
    assert TASK.encode_rows(torch.zeros(3, 4), 2) is None  # a wrong batch size too


@pytest.mark.parametrize(
    "output",
    [
        (torch.arange(6).reshape(2, 3), torch.tensor([1.5, 2.5])),
        {"a": torch.arange(4.0).reshape(2, 2), "b": [torch.tensor([[1], [2]])]},
    ],
)
def test_structured_outputs_are_encoded_at_once_as_row_by_row(output: object) -> None:
    at_once = TASK.encode_rows(output, 2)
    assert at_once is not None
    assert at_once == [TASK.encode(row) for row in split_rows(output, 2)]


def test_a_classifier_whose_output_is_not_a_tensor_fails_per_request() -> None:
    class Pairs(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
            return [(x, x)]

    image = ImageClassificationTask(IMAGE)
    payloads = image.example_payloads(np.random.default_rng(0))
    outcomes = run_batch(Pairs(), image, payloads, CPU)
    assert [o.code for o in outcomes] == [500, 500]
    assert "must return a tensor" in outcomes[0].message
