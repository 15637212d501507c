"""Errors raised by the model side.

HandlerError
├── CheckpointError        the file can't be read as weights (format, pickle, missing key)
├── ModelBuildError        the model class can't be found or constructed
│   └── KeyMismatchError   the weights don't fit the model (carries the key report)
├── SettingsError          model-config.yaml is missing a key or has a wrong one
├── IntegrityError         the archive's files don't match its manifest
├── GoldenAnswerError      the archive no longer answers its recorded examples as it did
└── RequestError           one request can't be decoded (an HTTP 400 for that request)
    └── HookError          a user's decode hook failed (an HTTP 500 for that request)
"""

from __future__ import annotations


class HandlerError(Exception):
    """Base of every error the model side raises on purpose."""


class CheckpointError(HandlerError):
    """A checkpoint that can't be turned into a state_dict safely."""


class ModelBuildError(HandlerError):
    """The model class can't be imported or constructed."""


class KeyMismatchError(ModelBuildError):
    """Weights and model disagree on keys or shapes; ``report`` says how."""

    def __init__(self, message: str, report: object) -> None:
        super().__init__(message)
        self.report = report


class SettingsError(HandlerError):
    """Invalid handler settings."""


class IntegrityError(HandlerError):
    """An archive whose files differ from the digests it was built with."""


class GoldenAnswerError(HandlerError):
    """An example recorded at build time that the loaded archive answers differently."""


class RequestError(HandlerError):
    """A request body that can't be decoded into the model's input."""

    # How the request fails: TorchServe's status and error type for it.
    status = 400
    kind = "InvalidInput"


class HookError(RequestError):
    """A user's decode hook that failed on a request in a way that is not the body's fault."""

    status = 500
    kind = "ModelError"
