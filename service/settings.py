"""The gateway's settings, read from the environment once, when the app is created.

The names carry no prefix because the launcher and the docker deployment share them
(`GATEWAY_PORT`, `TORCHSERVE_INFERENCE_PORT`, ...; see `launcher.settings`). The launcher
imports `GatewaySettings` to render TorchServe's `max_request_size` from
`GATEWAY_MAX_BODY_BYTES`, so one number bounds a body on both sides.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.backends import BackendAddress, parse_backend, parse_backends

Port = Annotated[int, Field(ge=1, le=65535)]
# Keys are split on commas by `_split_keys`, not decoded as JSON.
Keys = Annotated[tuple[str, ...], NoDecode]

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
MIN_KEY_LENGTH = 16


class UpstreamTransport(StrEnum):
    """Which httpx transport carries requests to TorchServe (measured: README, "Gateway")."""

    AIOHTTP = "aiohttp"  # service.transport.AiohttpTransport: the fastest measured
    HTTPCORE = "httpcore"  # httpx's own AsyncHTTPTransport: pure Python, slower


class GatewaySettings(BaseSettings):
    """Where the gateway listens, where TorchServe is, and the limits and keys it enforces.

    Validated when constructed: a bad port, a non-positive limit or a key shorter than
    `MIN_KEY_LENGTH` raises `pydantic.ValidationError` before the server accepts anything.
    """

    # hide_input_in_errors: a validation error must not print a key into the logs.
    model_config = SettingsConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)

    gateway_host: str = "127.0.0.1"
    gateway_port: Port = 8000

    torchserve_host: str = "127.0.0.1"
    torchserve_inference_port: Port = 8080
    torchserve_management_port: Port = 8081
    # TorchServe's metrics port is the launcher's alone (launcher.settings): the gateway never
    # calls it, so it does not read it.

    # `POST /models?url=<name>.mar` may name only an archive in this directory.
    model_store: Path = Path("model_store")

    # Comma-separated bearer keys. No defaults: with no inference keys, inference is open;
    # with no management keys, management is off (403).
    gateway_inference_keys: Keys = Field(default=(), repr=False)
    gateway_management_keys: Keys = Field(default=(), repr=False)

    gateway_max_body_bytes: Annotated[int, Field(gt=0)] = DEFAULT_MAX_BODY_BYTES
    # The whole upstream call, connect to last byte: past it the client gets 504.
    gateway_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    # Connecting to TorchServe on loopback is instant or refused; a short bound makes an
    # unreachable TorchServe a quick 503 rather than a wait.
    gateway_connect_timeout_s: Annotated[float, Field(gt=0)] = 0.5
    # Proxied requests (predictions and management) in flight at once; beyond it: 503.
    gateway_max_in_flight: Annotated[int, Field(gt=0)] = 256
    # The upstream connection pool's size.
    gateway_upstream_connections: Annotated[int, Field(gt=0)] = 100
    gateway_upstream_transport: UpstreamTransport = UpstreamTransport.AIOHTTP
    # Batching in the gateway (service.batching): a prediction for an idle model goes
    # upstream at once; while the model has requests there (at most GATEWAY_BATCH_IN_FLIGHT:
    # one running, two queued that TorchServe hands the worker together, as archives run
    # batch 2, delay 0), predictions queue and go together, up to GATEWAY_BATCH_MAX_ITEMS
    # per request (1: off).
    gateway_batch_max_items: Annotated[int, Field(ge=1, le=1024)] = 16
    gateway_batch_in_flight: Annotated[int, Field(ge=1)] = 3
    # While a model has requests upstream, queued predictions go early (before one of them
    # comes back) only once this many are queued: no envelopes of one item at moderate load.
    gateway_batch_min_items: Annotated[int, Field(ge=1, le=1024)] = 4
    # Client time limits and the connection bound, enforced by the gateway's HTTP protocol
    # (service.http_protocol; uvicorn has a setting for the keep-alive only): headers
    # complete within GATEWAY_HEADER_TIMEOUT_S of the connection's start or a request's first
    # byte, else the connection is closed; the body complete within GATEWAY_BODY_TIMEOUT_S
    # of the headers, else 408; an idle keep-alive connection closed after
    # GATEWAY_KEEPALIVE_S; a connection beyond GATEWAY_MAX_CONNECTIONS answered 503.
    gateway_header_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    gateway_body_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    gateway_keepalive_s: Annotated[float, Field(gt=0)] = 5.0
    gateway_max_connections: Annotated[int, Field(gt=0)] = 2048
    # After `POST /models` answered 202 (workers starting), the gateway watches the model
    # this long: a worker that dies while starting gets the model unregistered and the
    # registration answered 500 `ModelLoadFailed` (service.registration_guard).
    gateway_load_grace_s: Annotated[float, Field(gt=0)] = 10.0
    # TorchServe's log directory, when the gateway can read it (same machine: `make serve`
    # sets it). A failed registration's answer then carries the model's own error from the
    # model log (service.model_log); TorchServe's API says only "Failed to start workers".
    gateway_torchserve_log_dir: Path | None = None
    # `/readyz` asks TorchServe about this many models at once, each within this time.
    gateway_readiness_concurrency: Annotated[int, Field(gt=0)] = 8
    gateway_readiness_timeout_s: Annotated[float, Field(gt=0)] = 2.0
    # Several TorchServes (service.backends, service.backend_pool): a fixed list, or one DNS
    # name answering every address (a headless Service), looked up every GATEWAY_RESOLVE_S.
    # Neither: the one backend is TORCHSERVE_HOST with the ports above.
    torchserve_backends: Annotated[tuple[BackendAddress, ...], NoDecode] = ()
    torchserve_backends_dns: Annotated[BackendAddress | None, NoDecode] = None
    gateway_resolve_s: Annotated[float, Field(gt=0)] = 10.0
    # Each backend is checked this often (/ping and its model list); a failing one leaves the
    # rotation at once and comes back after two good checks in a row.
    gateway_health_s: Annotated[float, Field(gt=0)] = 2.0

    @field_validator("torchserve_backends", mode="before")
    @classmethod
    def _parse_backends(cls, value: object) -> object:
        return parse_backends(value) if isinstance(value, str) else value

    @field_validator("torchserve_backends_dns", mode="before")
    @classmethod
    def _parse_backends_dns(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_backend(value) if value.strip() else None
        return value

    @model_validator(mode="after")
    def _one_way_to_name_backends(self) -> GatewaySettings:
        if self.torchserve_backends and self.torchserve_backends_dns is not None:
            raise ValueError("set TORCHSERVE_BACKENDS or TORCHSERVE_BACKENDS_DNS, not both")
        return self

    @property
    def pooled(self) -> bool:
        """Whether the gateway runs a pool of backends rather than the one TORCHSERVE_HOST."""
        return bool(self.torchserve_backends) or self.torchserve_backends_dns is not None

    @field_validator("gateway_inference_keys", "gateway_management_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(key.strip() for key in value.split(",") if key.strip())
        return value

    @field_validator("gateway_inference_keys", "gateway_management_keys")
    @classmethod
    def _check_keys(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        for key in keys:
            if len(key) < MIN_KEY_LENGTH:
                # The message must not echo the key: settings errors end up in logs.
                raise ValueError(f"every key must be at least {MIN_KEY_LENGTH} characters long")
            if not key.isascii() or not key.isprintable() or " " in key:
                raise ValueError("keys must be printable ASCII without spaces")
        return keys

    @property
    def inference_url(self) -> str:
        """TorchServe's inference API base URL, no trailing slash."""
        return f"http://{self.torchserve_host}:{self.torchserve_inference_port}"

    @property
    def management_url(self) -> str:
        """TorchServe's management API base URL, no trailing slash."""
        return f"http://{self.torchserve_host}:{self.torchserve_management_port}"
