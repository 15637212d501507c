import logging

import pytest
import torch

from handlers.errors import KeyMismatchError, ModelBuildError
from handlers.model_loading import build_model, import_model_class
from tests.unit.handlers.helpers import MODELS_FILE, affine_expected, affine_state_dict


def test_class_is_chosen_by_name_among_many() -> None:
    assert import_model_class(MODELS_FILE, "TwoLayer").__name__ == "TwoLayer"
    assert import_model_class(MODELS_FILE, "Affine").__name__ == "Affine"


def test_unknown_class_lists_the_modules_defined() -> None:
    with pytest.raises(ModelBuildError) as caught:
        import_model_class(MODELS_FILE, "Missing")
    message = str(caught.value)
    assert "'Missing'" in message and "Affine" in message and "TwoLayer" in message
    assert "not_a_model" not in message
    with pytest.raises(ModelBuildError, match="no nn.Module class 'not_a_model'"):
        import_model_class(MODELS_FILE, "not_a_model")


def test_strict_load_gives_exact_outputs_in_eval_mode() -> None:
    model, report = build_model(import_model_class(MODELS_FILE, "Affine"), affine_state_dict())
    assert report.clean
    assert not model.training
    x = [1.0, 0.0, -1.0, 2.0]
    assert model(torch.tensor([x])).tolist() == [affine_expected(x)]


def test_weights_are_assigned_not_copied() -> None:
    weights = affine_state_dict()
    model, _ = build_model(import_model_class(MODELS_FILE, "Affine"), weights)
    # One copy in memory: the model's parameter is the checkpoint's tensor storage.
    assert model.linear.weight.data_ptr() == weights["linear.weight"].data_ptr()


def test_constructor_kwargs_are_passed() -> None:
    cls = import_model_class(MODELS_FILE, "TwoLayer")
    weights = cls(hidden=5).state_dict()
    model, report = build_model(cls, weights, kwargs={"hidden": 5})
    assert report.clean and model.first.out_features == 5


def test_strict_mismatch_reports_missing_unexpected_and_shapes() -> None:
    weights = {
        "linear.weight": torch.zeros(3, 4),  # wrong shape
        "extra.weight": torch.zeros(1),  # unexpected
    }  # linear.bias missing
    with pytest.raises(KeyMismatchError) as caught:
        build_model(import_model_class(MODELS_FILE, "Affine"), weights)
    message = str(caught.value)
    assert "missing from the checkpoint (1): linear.bias" in message
    assert "unexpected in the checkpoint (1): extra.weight" in message
    assert "linear.weight: checkpoint [3, 4] vs model [2, 4]" in message
    assert "strict = false" in message
    report = caught.value.report
    assert report.missing == ("linear.bias",)  # type: ignore[attr-defined]


def test_non_strict_loads_what_matches_and_logs_the_report(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cls = import_model_class(MODELS_FILE, "TwoLayer")
    donor = cls().state_dict()
    partial = {
        "first.weight": donor["first.weight"],
        "first.bias": donor["first.bias"],
        "second.weight": torch.zeros(7, 7),
    }
    with caplog.at_level(logging.WARNING, logger="handlers.model_loading"):
        model, report = build_model(cls, partial, strict=False)
    assert report.missing == ("second.bias",)
    assert report.mismatched == (("second.weight", (7, 7), (2, 3)),)
    assert torch.equal(model.first.weight, donor["first.weight"])
    assert not model.second.weight.is_meta and model.second.weight.shape == (2, 3)
    assert "strict=False" in caplog.text and "second.bias" in caplog.text
    assert model(torch.ones(1, 4)).shape == (1, 2)


def test_non_persistent_buffers_keep_their_values() -> None:
    cls = import_model_class(MODELS_FILE, "WithScale")
    model, _ = build_model(cls, affine_state_dict())
    assert torch.equal(model.scale, torch.full((2,), 10.0))
    x = [1.0, 1.0, 1.0, 1.0]
    assert model(torch.tensor([x])).tolist() == [[10 * v for v in affine_expected(x)]]


def test_a_constructor_that_raises_is_reported() -> None:
    with pytest.raises(ModelBuildError, match="Broken.*RuntimeError: cannot build"):
        build_model(import_model_class(MODELS_FILE, "Broken"), {})


def test_missing_model_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelBuildError, match="not found"):
        import_model_class(tmp_path / "nope.py", "Net")
    broken = tmp_path / "syntax.py"
    broken.write_text("def (:\n")
    with pytest.raises(ModelBuildError, match="importing syntax.py failed"):
        import_model_class(broken, "Net")
