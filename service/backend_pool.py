"""Several TorchServes behind one gateway: one client per backend, health, fan-out, merging.

`BackendPool` stands where the one `TorchServeClient` stands (the routes, the readiness check
and the registration guard call it the same way) and `PooledBatcher` where the one
`PredictionBatcher` stands; `service.app` builds them when TORCHSERVE_BACKENDS or
TORCHSERVE_BACKENDS_DNS is set.

- Predictions go to the healthy backend with the fewest requests in flight, among those
  where the model is registered; each backend has its own batcher, so batching stays per
  model and backend. A request whose connection could not be made (`UpstreamUnreachable`:
  nothing was written) is retried on another backend; one that was sent never is.
- Health (`service.backend_health`): a backend leaves the rotation on its first failed
  request or check and comes back after two good checks in a row, once it has been given
  the models the others serve.
- Management: register, scale, set-default and unregister go to every backend; the answer
  says which succeeded (`backends` in its JSON, `x-gateway-backends`), and a call that
  failed on some backends only (down ones included) is a 502 `BackendsDisagree` naming
  them. `GET /models` and describe merge the backends' answers, each worker tagged with
  its backend.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from prometheus_client import Counter, Gauge

from service.backend_health import (
    GOOD_CHECKS_TO_RETURN,
    BackendState,
    Member,
    check_member,
    join_member,
)
from service.backends import BackendAddress, resolve
from service.batching import PredictionBatcher
from service.errors import (
    BackendsDisagree,
    GatewayError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamUnavailable,
    UpstreamUnreachable,
)
from service.metrics import GatewayMetrics
from service.readiness import check_readiness
from service.settings import GatewaySettings
from service.upstream import TorchServeClient, UpstreamResponse
from service.upstream_errors import Api

logger = logging.getLogger(__name__)

T = TypeVar("T")
_PREDICTION_PATH = re.compile(r"/predictions/([^/?]+)")
_JSON = [(b"content-type", b"application/json")]
BACKENDS_HEADER = b"x-gateway-backends"


class BackendMetrics:
    """Per-backend series, in the gateway's registry."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.requests = Counter(
            "gateway_backend_requests",
            "Requests to each backend, by outcome: answered; failed (sent, no answer); "
            "unreachable (no connection, so not sent: retried on another backend).",
            ["backend", "outcome"],
            registry=metrics.registry,
        )
        self.in_flight = Gauge(
            "gateway_backend_in_flight",
            "Requests at each backend now.",
            ["backend"],
            registry=metrics.registry,
        )
        self.healthy = Gauge(
            "gateway_backend_healthy",
            "1 while the backend takes traffic, else 0.",
            ["backend"],
            registry=metrics.registry,
        )


class BackendPool(TorchServeClient):
    """Every backend the settings name, behind `TorchServeClient`'s interface.

    It holds no connection of its own (each member has its client), so the base class's
    constructor is not called. `start()` inside the running loop; `aclose()` stops it.
    """

    def __init__(self, settings: GatewaySettings, metrics: GatewayMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._backend_metrics = BackendMetrics(metrics)
        self._members: dict[BackendAddress, Member] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing: list[TorchServeClient] = []

    # --- membership -------------------------------------------------------------------

    @property
    def members(self) -> list[Member]:
        return list(self._members.values())

    def start(self) -> None:
        """Add the listed backends (or resolve the DNS name) and start checking them."""
        for address in self._settings.torchserve_backends:
            self._add(address)
        self._spawn(self._check_forever())
        if self._settings.torchserve_backends_dns is not None:
            self._spawn(self._resolve_forever(self._settings.torchserve_backends_dns))

    def _add(self, address: BackendAddress) -> Member:
        settings = self._settings.model_copy(
            update={
                "torchserve_host": address.url_host(),
                "torchserve_inference_port": address.inference_port,
                "torchserve_management_port": address.management_port,
            }
        )
        client = TorchServeClient(settings)
        batcher = PredictionBatcher(
            client,
            self._metrics,
            max_items=settings.gateway_batch_max_items,
            max_bytes=settings.gateway_max_body_bytes,
            slots=settings.gateway_batch_in_flight,
            min_items=settings.gateway_batch_min_items,
            timeout_s=settings.gateway_timeout_s,
        )
        member = Member(address, client, batcher)
        self._members[address] = member
        self._backend_metrics.healthy.labels(address.name).set(0)
        logger.info("Backend %s added (joining)", address.name)
        return member

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check_forever(self) -> None:
        while True:
            await asyncio.gather(*(self._check(m) for m in self.members))
            await asyncio.sleep(self._settings.gateway_health_s)

    async def _check(self, member: Member) -> None:
        ok = await check_member(member, timeout=self._settings.gateway_readiness_timeout_s)
        if not ok:
            self._mark_down(member, member.last_error)
        elif (
            member.state is not BackendState.HEALTHY
            and member.good_checks >= GOOD_CHECKS_TO_RETURN
            and not member.joining
        ):
            member.joining = True
            self._spawn(self._join(member))

    async def _join(self, member: Member) -> None:
        try:
            peers = [m for m in self.members if m.state is BackendState.HEALTHY]
            joined = await join_member(
                member,
                peers,
                self._settings.model_store,
                timeout=max(self._settings.gateway_timeout_s, 120.0),
            )
            if (
                joined
                and member.address in self._members
                and member.good_checks >= GOOD_CHECKS_TO_RETURN
            ):
                member.state = BackendState.HEALTHY
                self._backend_metrics.healthy.labels(member.name).set(1)
                logger.info(
                    "Backend %s takes traffic (models: %s)", member.name, sorted(member.models)
                )
        finally:
            member.joining = False

    def _mark_down(self, member: Member, why: str) -> None:
        member.good_checks = 0
        if member.state is not BackendState.DOWN:
            logger.warning("Backend %s leaves the rotation: %s", member.name, why)
        member.state = BackendState.DOWN
        member.last_error = why
        self._backend_metrics.healthy.labels(member.name).set(0)

    async def _resolve_forever(self, spec: BackendAddress) -> None:
        while True:
            try:
                found = set(await resolve(spec))
            except OSError as error:
                logger.warning("Resolving %s failed: %s (backends kept)", spec.host, error)
            else:
                for address in found - set(self._members):
                    self._add(address)
                for address in set(self._members) - found:
                    gone = self._members.pop(address)
                    self._mark_down(gone, "no longer in DNS")
                    logger.info("Backend %s removed (no longer in DNS)", address.name)
                    self._spawn(self._close_later(gone.client))
            await asyncio.sleep(self._settings.gateway_resolve_s)

    async def _close_later(self, client: TorchServeClient) -> None:
        """Close a removed backend's client once its last requests had their time."""
        self._closing.append(client)
        await asyncio.sleep(self._settings.gateway_timeout_s)
        self._closing.remove(client)
        await client.aclose()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in [m.client for m in self.members] + self._closing:
            await client.aclose()

    # --- choosing a backend ----------------------------------------------------------

    def _choose(self, model: str | None, tried: set[BackendAddress]) -> Member | None:
        healthy = [
            m
            for m in self._members.values()
            if m.state is BackendState.HEALTHY and m.address not in tried
        ]
        if model is not None:
            having = [m for m in healthy if model in m.models]
            healthy = having or healthy
        # Fewest in flight; ties broken at random so that light load spreads too.
        return min(healthy, key=lambda m: (m.in_flight, random.random()), default=None)

    def _none_healthy(self) -> UpstreamUnavailable:
        states = ", ".join(f"{m.name} {m.state.value}" for m in self.members) or "none known"
        return UpstreamUnavailable(f"No TorchServe backend takes traffic ({states}).")

    async def _tracked(self, member: Member, call: Awaitable[T]) -> T:
        """Await `call` made on `member`, counting it; a failure to answer takes the member
        out of the rotation at once."""
        metrics = self._backend_metrics
        member.in_flight += 1
        metrics.in_flight.labels(member.name).inc()
        try:
            result = await call
        except UpstreamUnreachable as error:  # never sent: the caller may go elsewhere
            metrics.requests.labels(member.name, "unreachable").inc()
            self._mark_down(member, f"{error.type_name}: {error.message}")
            raise
        except (UpstreamUnavailable, UpstreamProtocolError) as error:
            metrics.requests.labels(member.name, "failed").inc()
            self._mark_down(member, f"{error.type_name}: {error.message}")
            raise
        except UpstreamRejected:
            metrics.requests.labels(member.name, "answered").inc()
            raise
        except UpstreamError:
            metrics.requests.labels(member.name, "failed").inc()
            raise
        else:
            metrics.requests.labels(member.name, "answered").inc()
            return result
        finally:
            member.in_flight -= 1
            metrics.in_flight.labels(member.name).dec()

    # --- predictions -----------------------------------------------------------------

    async def predict(
        self, model: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> UpstreamResponse:
        """One prediction through the chosen backend's batcher; retried elsewhere only if
        it could not be sent."""
        tried: set[BackendAddress] = set()
        while True:
            member = self._choose(model, tried)
            if member is None:
                raise self._none_healthy()
            tried.add(member.address)
            try:
                return await self._tracked(
                    member, member.batcher.predict(model, path, headers, body)
                )
            except UpstreamUnreachable:
                continue

    async def predict_many(
        self, model: str, path: str, requests: Sequence[tuple[list[tuple[bytes, bytes]], bytes]]
    ) -> list[UpstreamResponse | GatewayError]:
        """Several predictions, together on one backend; any that could not be sent are
        retried one by one elsewhere."""
        member = self._choose(model, set())
        if member is None:
            return [self._none_healthy() for _ in requests]
        results = await self._tracked(member, member.batcher.predict_many(model, path, requests))
        for index, result in enumerate(results):
            if isinstance(result, UpstreamUnreachable):
                self._mark_down(member, result.message)
                try:
                    results[index] = await self.predict(model, path, *requests[index])
                except GatewayError as error:
                    results[index] = error
        return results

    def forget(self) -> None:
        for member in self.members:
            member.batcher.forget()

    # --- TorchServeClient's interface --------------------------------------------------

    async def send(
        self,
        api: Api,
        method: str,
        path: str,
        *,
        query: bytes = b"",
        headers: list[tuple[bytes, bytes]] | None = None,
        content: bytes = b"",
        timeout: float | None = None,
    ) -> UpstreamResponse:
        """As `TorchServeClient.send`, over the pool: inference to one backend, management
        reads merged over every healthy one, management changes to all of them."""
        if api is Api.INFERENCE:
            match = _PREDICTION_PATH.match(path)
            tried: set[BackendAddress] = set()
            while True:
                member = self._choose(match.group(1) if match else None, tried)
                if member is None:
                    raise self._none_healthy()
                tried.add(member.address)
                call = member.client.send(
                    api,
                    method,
                    path,
                    query=query,
                    headers=headers,
                    content=content,
                    timeout=timeout,
                )
                try:
                    return await self._tracked(member, call)
                except UpstreamUnreachable:
                    continue
        if method == "GET":
            return await self._read(path, query, headers, timeout)
        return await self._fan_out(method, path, query, headers, content, timeout)

    async def _read(
        self,
        path: str,
        query: bytes,
        headers: list[tuple[bytes, bytes]] | None,
        timeout: float | None,
    ) -> UpstreamResponse:
        healthy = [m for m in self.members if m.state is BackendState.HEALTHY]
        if not healthy:
            raise self._none_healthy()
        calls = [
            self._tracked(
                m,
                m.client.send(
                    Api.MANAGEMENT, "GET", path, query=query, headers=headers, timeout=timeout
                ),
            )
            for m in healthy
        ]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        answered: list[tuple[Member, UpstreamResponse]] = []
        errors: list[BaseException] = []
        for member, outcome in zip(healthy, outcomes, strict=True):
            if isinstance(outcome, UpstreamResponse):
                answered.append((member, outcome))
            else:
                errors.append(outcome)
        if not answered:
            raise _first_meaningful(errors)
        body: Any
        try:
            if path == "/models":
                body = merge_model_lists([json.loads(a.body) for _, a in answered])
            elif path.startswith("/models/"):
                body = merge_descriptions([(m.name, json.loads(a.body)) for m, a in answered])
            else:
                return answered[0][1]
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise UpstreamProtocolError(
                "A backend's answer was not what TorchServe sends."
            ) from exc
        return UpstreamResponse(200, list(_JSON), json.dumps(body, indent=2).encode())

    async def _fan_out(
        self,
        method: str,
        path: str,
        query: bytes,
        headers: list[tuple[bytes, bytes]] | None,
        content: bytes,
        timeout: float | None,
    ) -> UpstreamResponse:
        members = self.members
        if not members:
            raise self._none_healthy()

        async def call(member: Member) -> UpstreamResponse | UpstreamError:
            if member.state is not BackendState.HEALTHY:
                why = f" ({member.last_error})" if member.last_error else ""
                return UpstreamUnavailable(f"{member.state.value}{why}")
            try:
                return await self._tracked(
                    member,
                    member.client.send(
                        Api.MANAGEMENT,
                        method,
                        path,
                        query=query,
                        headers=headers,
                        content=content,
                        timeout=timeout,
                    ),
                )
            except UpstreamError as error:
                return error

        outcomes = await asyncio.gather(*(call(m) for m in members))
        # What each backend serves changed: re-read the lists before the next prediction.
        await asyncio.gather(
            *(
                check_member(m, timeout=self._settings.gateway_readiness_timeout_s, count=False)
                for m in members
                if m.state is BackendState.HEALTHY
            )
        )
        succeeded = [
            (m, o)
            for m, o in zip(members, outcomes, strict=True)
            if not isinstance(o, UpstreamError)
        ]
        failed = [
            (m, o) for m, o in zip(members, outcomes, strict=True) if isinstance(o, UpstreamError)
        ]
        if not failed:
            return _with_backends(succeeded)  # type: ignore[arg-type]
        if not succeeded:
            raise _first_meaningful([error for _, error in failed])
        names = ", ".join(m.name for m, _ in succeeded)
        why = "; ".join(f"{m.name}: {e.type_name}: {e.message}" for m, e in failed)
        raise BackendsDisagree(f"Succeeded on {names}; failed on {why}")

    # --- readiness -------------------------------------------------------------------

    async def readiness(self, *, concurrency: int, timeout: float) -> tuple[bool, dict[str, Any]]:
        """`/readyz` over the pool: ready when at least one backend takes traffic and every
        model it serves is ready on at least one backend; the body lists every backend."""
        healthy = [m for m in self.members if m.state is BackendState.HEALTHY]
        checks = await asyncio.gather(
            *(check_readiness(m.client, concurrency=concurrency, timeout=timeout) for m in healthy)
        )
        by_member = dict(zip((m.name for m in healthy), checks, strict=True))
        models: dict[str, list[str]] = {}
        for name, check in by_member.items():
            for model, state in check.models.items():
                ready_on = models.setdefault(model, [])
                if check.torchserve == "up" and state.ready:
                    ready_on.append(name)
        ready = bool(healthy) and all(models.values())
        body = {
            "ready": ready,
            "torchserve": "up" if healthy else "unavailable: no backend takes traffic",
            "backends": {
                m.name: {
                    "state": m.state.value,
                    "inFlight": m.in_flight,
                    **(
                        {"error": m.last_error}
                        if m.state is not BackendState.HEALTHY and m.last_error
                        else {}
                    ),
                    **({"readiness": by_member[m.name].as_json()} if m.name in by_member else {}),
                }
                for m in self.members
            },
            "models": {
                model: {"ready": bool(on), "readyOn": on} for model, on in sorted(models.items())
            },
        }
        return ready, body


class PooledBatcher(PredictionBatcher):
    """The batcher the routes call, over the pool: each backend batches its own share.

    Only `predict`, `predict_many` and `forget` are used by callers; the base class's state
    (one lane per path) lives in each member's own batcher, so its constructor is not called.
    """

    def __init__(self, pool: BackendPool) -> None:
        self._pool = pool

    def forget(self) -> None:
        self._pool.forget()

    async def predict(
        self, model: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> UpstreamResponse:
        return await self._pool.predict(model, path, headers, body)

    async def predict_many(
        self, model: str, path: str, requests: Sequence[tuple[list[tuple[bytes, bytes]], bytes]]
    ) -> list[UpstreamResponse | GatewayError]:
        return await self._pool.predict_many(model, path, requests)


def _first_meaningful(errors: Sequence[BaseException]) -> BaseException:
    """The error to answer when every backend failed: TorchServe's own answer if one gave
    one (404, 409, a failed load...), else the first failure to answer."""
    for error in errors:
        if isinstance(error, UpstreamRejected):
            return error
    for error in errors:
        if isinstance(error, GatewayError):
            return error
    return errors[0] if errors else UpstreamUnavailable()


def _with_backends(succeeded: list[tuple[Member, UpstreamResponse]]) -> UpstreamResponse:
    """The first backend's answer, saying which backends succeeded."""
    first = succeeded[0][1]
    statuses = {m.name: answer.status for m, answer in succeeded}
    headers = [(n, v) for n, v in first.headers if n.lower() != b"content-length"]
    headers.append((BACKENDS_HEADER, ", ".join(statuses).encode()))
    try:
        body = json.loads(first.body)
    except ValueError:
        return UpstreamResponse(first.status, headers, first.body)
    if isinstance(body, dict):
        body["backends"] = statuses
        return UpstreamResponse(first.status, headers, json.dumps(body, indent=2).encode())
    return UpstreamResponse(first.status, headers, first.body)


def merge_model_lists(pages: Sequence[Any]) -> dict[str, Any]:
    """`GET /models` answers of several backends as one: each model once, by name."""
    models: dict[str, Any] = {}
    token = None
    for page in pages:
        for entry in page.get("models", []):
            models.setdefault(str(entry["modelName"]), entry)
        token = token or page.get("nextPageToken")
    merged: dict[str, Any] = {"models": [models[name] for name in sorted(models)]}
    if token:
        merged["nextPageToken"] = token
    return merged


def merge_descriptions(answers: Sequence[tuple[str, Any]]) -> list[dict[str, Any]]:
    """Describe answers (`[{modelVersion, workers...}]`) of several backends as one: each
    version once, its workers from every backend tagged `backend`, and `backends` listing
    where it is registered."""
    merged: dict[str, dict[str, Any]] = {}
    for backend, versions in answers:
        if not isinstance(versions, list):
            raise TypeError("a description is a list of versions")
        for entry in versions:
            version = str(entry.get("modelVersion", ""))
            workers = [{**w, "backend": backend} for w in entry.get("workers") or []]
            if version not in merged:
                merged[version] = {**entry, "workers": workers, "backends": [backend]}
            else:
                merged[version]["workers"].extend(workers)
                merged[version]["backends"].append(backend)
    return list(merged.values())
