"""Names, versions and archive urls: allow-lists that refuse every traversal trick."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.errors import InvalidRequest
from service.validation import check_model_name, check_version, resolve_archive


@pytest.mark.parametrize("name", ["m", "resnet-18", "My_Model2", "a" * 64])
def test_valid_names(name: str) -> None:
    assert check_model_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "-x", "_x", "a" * 65, "a.b", "a/b", "..", "a%2fb", "a\\b", "a\x00", "\uff41bc", "a b"],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidRequest):
        check_model_name(name)


@pytest.mark.parametrize("version", ["1", "1.0", "2.0.1-rc_1", "all", "v" * 64])
def test_valid_versions(version: str) -> None:
    assert check_version(version) == version


@pytest.mark.parametrize("version", ["", ".1", "1..2", "1/2", "1\\2", "1%2e", "1.0\n", "\uff11.0"])
def test_invalid_versions(version: str) -> None:
    with pytest.raises(InvalidRequest):
        check_version(version)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    (tmp_path / "echo.mar").write_bytes(b"PK")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.mar").write_bytes(b"PK")
    return tmp_path


def test_an_archive_in_the_store_is_accepted(store: Path) -> None:
    assert resolve_archive("echo.mar", store) == "echo.mar"


@pytest.mark.parametrize(
    "url",
    [
        "http://evil.example/x.mar",
        "https://169.254.169.254/latest.mar",
        "file:///etc/passwd",
        "s3://bucket/x.mar",
        "/etc/passwd",
        "../echo.mar",
        "..%2fecho.mar",
        "%2e%2e/echo.mar",
        "%2e%2e%2fecho.mar",
        "sub/inner.mar",
        "sub\\inner.mar",
        "..\\echo.mar",
        "echo.mar\x00.txt",
        "echo.mar/",
        "\uff45cho.mar",
        "echo.mar?x=1",
        "echo",
        "echo.tar.gz",
        "missing.mar",
        "",
        ".mar",
    ],
)
def test_anything_else_is_refused(store: Path, url: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        resolve_archive(url, store)
    assert str(store) not in info.value.message


@given(st.text(max_size=80))
def test_whatever_is_accepted_is_a_plain_file_name(text: str) -> None:
    try:
        check_model_name(text)
    except InvalidRequest:
        return
    assert "/" not in text and "\\" not in text and "." not in text and text.isascii()
