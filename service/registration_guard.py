"""A registration whose workers fail to start is undone, and the client is told.

TorchServe keeps a model registered after its workers failed to start, answering the
registration 500 ("Failed to start workers ...") when it was synchronous, or nothing at all
when it was not, and retries the workers forever. The gateway's `POST /models` instead:
- on TorchServe's `ModelLoadFailed`, unregisters that model version and says so;
- on a 202 (workers starting), watches the model for up to GATEWAY_LOAD_GRACE_S
  (`service.load_watch.WorkerWatch`) and answers once its workers are READY, or unregisters
  it and answers `ModelLoadFailed` as soon as a worker is seen dying; a model still loading
  when the grace ends is left to load, and the 202 goes back as TorchServe sent it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from urllib.parse import quote

from service.errors import ModelLoadFailed, UpstreamError
from service.load_watch import LoadState, WorkerWatch
from service.model_log import MODEL_LOG, last_model_error
from service.upstream import TorchServeClient
from service.upstream_errors import Api, sanitise

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.25
MODEL_LOG_WAIT_S = 5.0


def _path(name: str, version: str) -> str:
    return f"/models/{quote(name, safe='')}/{quote(version, safe='')}"


async def unregister(
    upstream: TorchServeClient,
    name: str,
    version: str,
    cause: str,
    timeout: float,
    log_dir: Path | None = None,
) -> ModelLoadFailed:
    """Unregister `name` `version` and return the error that tells the client so.

    With TorchServe's `log_dir`, the cause carries the model's own error from its model log.
    """
    if log_dir is not None:
        error = await _model_error(log_dir / MODEL_LOG, name)
        if error:
            cause = f"{cause}: {sanitise(error)}"
    path = _path(name, version)
    try:
        await upstream.send(Api.MANAGEMENT, "DELETE", path, timeout=timeout)
        done = f"the gateway unregistered {name} version {version}"
    except UpstreamError as error:
        logger.warning("could not unregister %s %s after a failed load: %s", name, version, error)
        done = f"the gateway could not unregister {name} version {version}: {error.message}"
    logger.warning("model %s version %s failed to load (%s); %s", name, version, cause, done)
    return ModelLoadFailed(f"{ModelLoadFailed.default_message} ({cause}); {done}.")


async def _model_error(model_log: Path, name: str) -> str | None:
    """The model's error from its log, waiting up to MODEL_LOG_WAIT_S for TorchServe to
    write it: the frontend logs the worker's stderr asynchronously, so the line can trail the
    failure it explains."""
    deadline = time.monotonic() + MODEL_LOG_WAIT_S
    while True:
        error = await asyncio.to_thread(last_model_error, model_log, name)
        if error or time.monotonic() >= deadline:
            return error
        await asyncio.sleep(POLL_INTERVAL_S)


async def watch_new_model(
    upstream: TorchServeClient,
    name: str,
    version: str,
    *,
    grace_s: float,
    timeout: float,
    log_dir: Path | None = None,
) -> ModelLoadFailed | None:
    """Watch a model whose workers are starting; the error to answer if they died."""
    watch = WorkerWatch()
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            description = await upstream.get_json(
                Api.MANAGEMENT, _path(name, version), timeout=timeout
            )
        except UpstreamError:
            return None  # TorchServe cannot say: leave the model as it registered it
        with contextlib.suppress(TypeError, ValueError, AttributeError):
            if all(int(v.get("minWorkers", 1)) == 0 for v in description):
                return None  # no worker asked for: nothing to watch
        state = watch.observe(description)
        if state is LoadState.READY:
            return None
        if state is LoadState.FAILED:
            cause = "a worker died while loading the model"
            return await unregister(upstream, name, version, cause, timeout, log_dir)
        await asyncio.sleep(POLL_INTERVAL_S)
    return None
