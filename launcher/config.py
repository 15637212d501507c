"""Render TorchServe's config.properties (and name its log4j2.xml) from the launcher's settings."""

import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from string import Template

from launcher.settings import LauncherSettings
from service.settings import GatewaySettings

# TorchServe's limits sit above the gateway's by this much, for the multipart framing or
# headers that the gateway may add around a body it has accepted.
BODY_LIMIT_HEADROOM_BYTES = 64 * 1024
# Per model: with one worker on 2 cores, 100 queued requests is already seconds of work.
JOB_QUEUE_SIZE = 100


def gateway_max_body_bytes() -> int:
    """The largest request body the gateway accepts (`GATEWAY_MAX_BODY_BYTES`).

    Read through the gateway's own settings, so the name, default and validation are
    defined once. Raises pydantic.ValidationError if the gateway's environment is invalid.
    """
    return GatewaySettings().gateway_max_body_bytes


def log4j2_config_path() -> Path:
    """The log4j2.xml shipped with the launcher (async, file-backed, INFO)."""
    return Path(str(resources.files("launcher").joinpath("log4j2.xml")))


def allowed_urls_pattern(model_store: Path) -> str:
    """A regex (TorchServe's `allowed_urls`) that matches only archives inside `model_store`."""
    store = model_store.resolve().as_posix().rstrip("/")
    return "file://" + re.escape(store) + r"/[^/]+\.mar"


def load_models_value(models: Sequence[str] | None) -> str:
    """TorchServe's `load_models`: "all" for None, else the archives' names joined by commas.

    Raises:
        ValueError: a name is empty or contains a comma (TorchServe splits on commas).
    """
    if models is None:
        return "all"
    for model in models:
        if not model or "," in model:
            raise ValueError(f"invalid model archive name: {model!r}")
    return ",".join(models)


def escape_property(value: str) -> str:
    r"""Escape a value for java.util.Properties, which reads `\` as an escape character."""
    return value.replace("\\", "\\\\")


def render_torchserve_config(
    settings: LauncherSettings,
    *,
    models: Sequence[str] | None = None,
    max_body_bytes: int | None = None,
) -> str:
    """Fill launcher/config.properties with the ports, paths and limits of `settings`.

    Args:
        settings: where TorchServe listens and where its model store is.
        models: archive file names in the store to load at start-up (None: all of them).
        max_body_bytes: the gateway's body limit (default: `gateway_max_body_bytes()`);
            TorchServe's request and response limits are set just above it.

    Raises:
        ValueError: a model name cannot be expressed in `load_models`.
    """
    body_limit = gateway_max_body_bytes() if max_body_bytes is None else max_body_bytes
    template = Template(resources.files("launcher").joinpath("config.properties").read_text())
    values = {
        "bind_host": settings.torchserve_bind_host,
        "inference_port": settings.torchserve_inference_port,
        "management_port": settings.torchserve_management_port,
        "metrics_port": settings.torchserve_metrics_port,
        "grpc_inference_port": settings.torchserve_grpc_inference_port,
        "grpc_management_port": settings.torchserve_grpc_management_port,
        "worker_port": settings.torchserve_worker_port,
        "allowed_urls": allowed_urls_pattern(settings.model_store),
        "model_store": settings.model_store.resolve().as_posix(),
        "load_models": load_models_value(models),
        "workers_per_model": settings.torchserve_workers_per_model,
        "max_request_size": body_limit + BODY_LIMIT_HEADROOM_BYTES,
        "max_response_size": body_limit + BODY_LIMIT_HEADROOM_BYTES,
        "job_queue_size": JOB_QUEUE_SIZE,
    }
    return template.substitute({key: escape_property(str(value)) for key, value in values.items()})
