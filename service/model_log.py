"""The model's own error, read from TorchServe's model log after a worker died loading it.

TorchServe's management API answers a failed load with "Failed to start workers" only: the
worker's exception (a weight that does not fit, a golden answer that no longer matches) is in
the model log (`model_log.log`), one `MODEL_LOG` line per line of the worker's stderr. Where
that log can be read (the launcher, and a gateway on TorchServe's machine with
GATEWAY_TORCHSERVE_LOG_DIR), the error goes into what the user is told.
"""

from __future__ import annotations

import re
from pathlib import Path

MODEL_LOG = "model_log.log"

# The last line of a Python traceback in TorchServe's model log, e.g.
# `... W-9000-digits_1.0-stdout MODEL_LOG - RuntimeError: cannot load weights`.
_MODEL_LOG_ERROR = re.compile(r"MODEL_LOG - ((?:[A-Za-z_][\w.]*)?(?:Error|Exception)\b.*)$")
# TorchServe's worker re-raises a failed load as `RuntimeError: 500 - Unknown exception` after
# the handler's own traceback: not the model's error.
_WORKER_WRAPPER = re.compile(r"RuntimeError: \d{3} - ")


def last_model_error(model_log: Path, model: str) -> str | None:
    """The last exception line a worker of `model` wrote to TorchServe's model log, if any."""
    try:
        lines = model_log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    worker = f"-{model}_"
    for line in reversed(lines):
        if worker in line:
            match = _MODEL_LOG_ERROR.search(line)
            if match and not _WORKER_WRAPPER.match(match.group(1)):
                return match.group(1)
    return None
