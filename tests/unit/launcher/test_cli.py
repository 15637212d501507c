"""The command line: its commands and the first-prediction hint it prints."""

from pathlib import Path

import pytest

from launcher.cli import curl_example, parse_args


def test_commands() -> None:
    assert parse_args(["serve"]).command == "serve"
    assert parse_args(["serve", "--models", "a.mar", "b.mar"]).models == ["a.mar", "b.mar"]
    assert parse_args(["torchserve"]).models is None
    assert parse_args(["gateway"]).command == "gateway"


def test_a_command_is_required() -> None:
    with pytest.raises(SystemExit):
        parse_args([])


def test_curl_example_names_the_first_model_and_its_sample(tmp_path: Path) -> None:
    (tmp_path / "digits").mkdir()
    (tmp_path / "digits" / "sample.png").write_bytes(b"")

    hint = curl_example(
        "http://127.0.0.1:8000", ["digits", "other"], needs_key=False, examples=tmp_path
    )

    assert hint == (
        f"curl -X POST http://127.0.0.1:8000/predictions/digits -T {tmp_path}/digits/sample.png"
    )


def test_curl_example_without_a_sample_or_a_model(tmp_path: Path) -> None:
    assert curl_example("http://h:1", ["m"], needs_key=False, examples=tmp_path).endswith(
        "/predictions/m -T <input file>"
    )
    assert "/predictions/<model>" in curl_example("http://h:1", [], needs_key=False)


def test_curl_example_shows_where_the_key_goes() -> None:
    hint = curl_example("http://h:1", ["m"], needs_key=True)

    assert '-H "Authorization: Bearer <key>"' in hint
