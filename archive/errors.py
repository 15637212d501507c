"""Errors raised while turning a spec entry into an archive.

ArchiveError               every failure of ``python -m archive``; the CLI prints it and exits 1
├── SpecError              models.toml is unreadable, or an entry has a bad key or value
├── PrepareError           a model's ``prepare`` script failed or did not make the checkpoint
├── GateError              the checkpoint did not load, or the model did not answer the examples
└── ConvertError           ``convert --trust-pickle`` could not turn a pickled model into weights

Errors from ``handlers`` (CheckpointError, KeyMismatchError, ...) are wrapped in GateError with
the model's name, so a message always says which model failed and why.
"""

from __future__ import annotations


class ArchiveError(Exception):
    """Base of every error the build step raises on purpose."""


class SpecError(ArchiveError):
    """An invalid ``models.toml``."""


class PrepareError(ArchiveError):
    """A ``prepare`` script that failed or left no checkpoint behind."""


class GateError(ArchiveError):
    """A model that failed the gate: it can't be loaded or doesn't answer the examples."""


class ConvertError(ArchiveError):
    """A pickled model that can't be converted to a state_dict file."""
