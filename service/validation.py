"""Checks on every name the client controls, run before any upstream URL is built.

Names and versions become path segments of TorchServe URLs, and `POST /models?url=` is a
location TorchServe would fetch: without these checks the gateway would be a way to make
TorchServe download from anywhere (SSRF) or read files outside the model store. The rules
are allow-lists of ASCII characters, so encoded variants (`%2e%2e`, `%2f`, backslashes,
null bytes, full-width or other look-alike characters) fail by construction: the ASGI
server hands us the already percent-decoded text, which must still match.
"""

from __future__ import annotations

import re
from pathlib import Path

from service.errors import InvalidRequest

MODEL_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
VERSION_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
ARCHIVE_SUFFIX = ".mar"

_MODEL_NAME = re.compile(MODEL_NAME_PATTERN, re.ASCII)
_VERSION = re.compile(VERSION_PATTERN, re.ASCII)
_ARCHIVE = re.compile(MODEL_NAME_PATTERN + re.escape(ARCHIVE_SUFFIX), re.ASCII)


def check_model_name(name: str) -> str:
    """Return `name` if it is a valid model name; raise `InvalidRequest` (400) otherwise."""
    if _MODEL_NAME.fullmatch(name) is None:
        raise InvalidRequest(
            "Invalid model name: use 1-64 ASCII letters, digits, '_' or '-', "
            "starting with a letter or digit."
        )
    return name


def check_version(version: str) -> str:
    """Return `version` if it is a valid model version; raise `InvalidRequest` otherwise."""
    if _VERSION.fullmatch(version) is None or ".." in version:
        raise InvalidRequest(
            "Invalid model version: use 1-64 ASCII letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..'."
        )
    return version


def resolve_archive(url: str, model_store: Path) -> str:
    """Return the archive file name `url` names if it is an archive in `model_store`.

    Only a bare file name `<name>.mar` is accepted (no scheme, no directory, no `..`) and
    the file must exist in the store; TorchServe then resolves that name in the same store.
    Raises `InvalidRequest` (400) otherwise, with a message that never echoes a path.
    """
    if _ARCHIVE.fullmatch(url) is None:
        raise InvalidRequest(
            "Invalid archive: 'url' must be the file name of an archive in the model store, "
            "like 'my_model.mar' (no scheme, no directory)."
        )
    if not (model_store / url).is_file():
        raise InvalidRequest(f"Unknown archive: the model store has no {url!r}.")
    return url
