"""The served side: archives built by the project's build step, TorchServe, the gateway.

TorchServe starts with no model; each model is then registered through the management API
(the archive's model-config.yaml gives its workers and batching), which is what the
"registering -> first answer" time and the "peak RSS while loading" figures measure. The
servers are the launcher's own classes, started on free loopback ports the way the tests
start them (`tests.support.servers`), and stopped with every child on exit.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from archive.build import build_models
from archive.spec import DEFAULT_SPEC, ModelSpec, load_spec
from bench.loadgen import Target
from bench.processes import RssSampler, python_children, rss_bytes
from launcher.gateway import Gateway
from launcher.registration import registration_query
from launcher.torchserve import TorchServe
from tests.support.servers import running_gateway, running_torchserve

logger = logging.getLogger(__name__)

BENCH_SPEC = Path(__file__).with_name("models.toml")
BENCH_MODEL_FILE = Path(__file__).with_name("mnist_cnn.py")
WEIGHTS_SEED = 0
BODY_SEED = 0
REGISTER_TIMEOUT_S = 120.0

# The paths a request can take to the model.
TORCHSERVE = "torchserve"  # TorchServe directly, the archive's own serving config
TORCHSERVE_BATCHED = "torchserve-batched"  # TorchServe directly, with TorchServe's batching
GATEWAY = "gateway"  # through the gateway (which batches) to the archive's config
# The archives run at TorchServe batch 1 behind the gateway, which batches; TorchServe
# called directly does best with its own batching, measured in issue 7's first runs: 16
# beat 8 at concurrency 32, and 1 ms fills batches there while a lone request waits it.
DIRECT_BATCH_SIZE = 16
DIRECT_BATCH_DELAY_MS = 1
# The gateway's histogram of predictions per request it sends TorchServe (service.metrics).
UPSTREAM_ITEMS_METRIC = "gateway_upstream_batch_items"


def batched_name(model: str) -> str:
    """The name the archive is registered under a second time, with TorchServe's batching."""
    return f"{model}-tsbatch"


def upstream_batch_items(exposition: str) -> dict[str, tuple[float, float]]:
    """Per `model` label, the (sum, count) of the gateway's `gateway_upstream_batch_items`
    histogram in a Prometheus text exposition: predictions, and requests carrying them, sent
    to TorchServe. Empty when the metric is absent or the text does not parse.
    """
    totals: dict[str, tuple[float, float]] = {}
    try:
        for family in text_string_to_metric_families(exposition):
            if family.name != UPSTREAM_ITEMS_METRIC:
                continue
            for sample in family.samples:
                model = sample.labels.get("model", "")
                total, count = totals.get(model, (0.0, 0.0))
                if sample.name == f"{UPSTREAM_ITEMS_METRIC}_sum":
                    totals[model] = (sample.value, count)
                elif sample.name == f"{UPSTREAM_ITEMS_METRIC}_count":
                    totals[model] = (total, sample.value)
    except ValueError as exc:  # the parser's only complaint about a malformed exposition
        logger.warning("gateway /metrics did not parse: %s", exc)
        return {}
    return totals


@dataclass(frozen=True)
class BenchModel:
    """One model under test: its spec entry, where its files are, and the body to send."""

    entry: ModelSpec
    base_dir: Path
    body: bytes
    content_type: str

    @property
    def name(self) -> str:
        return self.entry.name


@dataclass(frozen=True)
class LoadReport:
    """Registering one model: time to its first answer, and its worker's RSS meanwhile."""

    model: str
    first_answer_s: float
    worker_pids: tuple[int, ...]
    peak_rss_loading: int


def write_bench_spec(work_dir: Path) -> Path:
    """Copy the bench spec and model file into `work_dir` and save random weights beside them.

    Returns the copied spec's path. The weights are `torch.manual_seed(WEIGHTS_SEED)`'s, so
    every run builds the same archive.
    """
    import torch

    from bench.mnist_cnn import MnistCnn

    work_dir.mkdir(parents=True, exist_ok=True)
    spec = work_dir / BENCH_SPEC.name
    shutil.copyfile(BENCH_SPEC, spec)
    shutil.copyfile(BENCH_MODEL_FILE, work_dir / BENCH_MODEL_FILE.name)
    torch.manual_seed(WEIGHTS_SEED)
    torch.save(MnistCnn().state_dict(), work_dir / "mnist_cnn.pt")
    return spec


def prepare_models(work_dir: Path, store: Path, digits_name: str = "digits") -> list[BenchModel]:
    """Build the `digits` example (archive/models.toml) and the bench's 28x28 CNN into `store`."""
    bench_spec = write_bench_spec(work_dir)
    chosen: list[BenchModel] = []
    for spec_path, name in ((DEFAULT_SPEC, digits_name), (bench_spec, "mnist28")):
        build_models(spec_path, store, [name], progress=lambda _: None)
        spec = load_spec(spec_path)
        (entry,) = spec.select([name])
        body, content_type = request_body(entry)
        chosen.append(BenchModel(entry, spec.base_dir, body, content_type))
    return chosen


def request_body(entry: ModelSpec) -> tuple[bytes, str]:
    """A valid request body for `entry`: a PNG for an image model, a JSON list for a tensor."""
    rng = np.random.default_rng(BODY_SEED)
    shape = entry.handler_settings().instance_shape
    if entry.task == "image-classification":
        from PIL import Image

        assert entry.image is not None
        height, width = entry.image.size
        pixels = rng.integers(0, 256, size=(height, width), dtype=np.uint8)
        image = Image.fromarray(pixels, mode="L").convert(entry.image.mode)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue(), "image/png"
    # Four decimals, as a client would send pixels: about 6 KB for 1x28x28, like the issue's.
    values = np.round(rng.random(shape), 4)
    return json.dumps(values.tolist(), separators=(",", ":")).encode(), "application/json"


@dataclass
class Stack:
    """TorchServe and the gateway in front of it, both running."""

    torchserve: TorchServe
    gateway: Gateway

    def target(self, model: BenchModel, path: str) -> Target:
        """Where `path` ("torchserve", "torchserve-batched" or "gateway") sends `model`'s body."""
        if path == GATEWAY:
            url = f"{self.gateway.url}/predictions/{model.name}"
        elif path == TORCHSERVE_BATCHED:
            url = f"{self.torchserve.inference_url}/predictions/{batched_name(model.name)}"
        else:
            url = f"{self.torchserve.inference_url}/predictions/{model.name}"
        return Target(url, model.body, model.content_type)

    def register_batched(self, model: BenchModel) -> None:
        """Register `model`'s archive again, as `batched_name(model)`, with TorchServe's own
        batching: the direct baseline at its best."""
        self.register_with_batching(
            model, batched_name(model.name), DIRECT_BATCH_SIZE, DIRECT_BATCH_DELAY_MS
        )

    def register_with_batching(
        self, model: BenchModel, name: str, batch_size: int, delay_ms: int
    ) -> None:
        """Register `model`'s archive once more, as `name`, at TorchServe batch `batch_size`
        with `delay_ms` of delay. Explicit register parameters override the archive's
        model-config.yaml in TorchServe 0.12; raises RuntimeError when TorchServe refuses the
        registration or serves it with another batch size or delay.
        """
        register_batched(self.torchserve.management_url, model.name, name, batch_size, delay_ms)

    def upstream_totals(self) -> dict[str, tuple[float, float]]:
        """Per model, (predictions, requests) the gateway has sent TorchServe so far, from its
        /metrics (see `upstream_batch_items`); empty when that cannot be read."""
        try:
            with httpx.Client(trust_env=False, timeout=10.0) as client:
                answer = client.get(f"{self.gateway.url}/metrics")
        except httpx.HTTPError as exc:
            logger.warning("gateway /metrics unreadable: %s", exc)
            return {}
        if answer.status_code != 200:
            logger.warning("gateway /metrics answered %d", answer.status_code)
            return {}
        return upstream_batch_items(answer.text)

    def worker_pids(self, model: str) -> list[int]:
        """The pids of `model`'s workers, from TorchServe's describe-model API."""
        with httpx.Client(trust_env=False, timeout=10.0) as client:
            answer = client.get(f"{self.torchserve.management_url}/models/{model}")
            answer.raise_for_status()
        return [int(w["pid"]) for v in answer.json() for w in v.get("workers", []) if w.get("pid")]

    def describe(self, model: str) -> dict[str, object]:
        """TorchServe's view of `model`'s first version (batch size, delay, workers)."""
        with httpx.Client(trust_env=False, timeout=10.0) as client:
            answer = client.get(f"{self.torchserve.management_url}/models/{model}")
            answer.raise_for_status()
        described: dict[str, object] = answer.json()[0]
        return described

    def register(self, model: BenchModel) -> LoadReport:
        """Register `model`'s archive and wait for its first answer, sampling its worker's RSS.

        Raises RuntimeError when TorchServe refuses it or it never answers 200.
        """
        java = self.torchserve.pid
        assert java is not None
        existing = set(python_children(java))
        with (
            RssSampler(lambda: set(python_children(java)) - existing, 0.02) as sampler,
            httpx.Client(trust_env=False, timeout=REGISTER_TIMEOUT_S) as client,
        ):
            started = time.perf_counter()
            # As the launcher registers it: batch size and delay exactly as the archive says.
            archive = self.torchserve.settings.model_store / f"{model.name}.mar"
            query = registration_query(archive, default_workers=1)
            answer = client.post(
                f"{self.torchserve.management_url}/models",
                params={**query, "synchronous": "true"},
            )
            if answer.status_code != 200:
                raise RuntimeError(f"registering {model.name}: {answer.status_code} {answer.text}")
            target = self.target(model, TORCHSERVE)
            deadline = started + REGISTER_TIMEOUT_S
            while True:
                reply = client.post(
                    target.url, content=target.body, headers={"content-type": target.content_type}
                )
                if reply.status_code == 200:
                    break
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"{model.name} never answered: {reply.status_code}")
                time.sleep(0.01)
            first_answer = time.perf_counter() - started
        pids = tuple(self.worker_pids(model.name))
        peaks = sampler.peaks()
        return LoadReport(
            model=model.name,
            first_answer_s=first_answer,
            worker_pids=pids,
            peak_rss_loading=max((peaks.get(pid, 0) for pid in pids), default=0),
        )

    def roles(self, model: str, worker_pids: dict[str, list[int]]) -> dict[str, list[int]]:
        """The pids of each role while `model` is under load."""
        return {
            "gateway": [self.gateway.pid] if self.gateway.pid else [],
            "frontend": [self.torchserve.pid] if self.torchserve.pid else [],
            "worker": worker_pids.get(model, []),
        }

    def all_pids(self) -> list[int]:
        """Every server process: the gateway, the JVM and every worker."""
        java = self.torchserve.pid
        pids = [pid for pid in (self.gateway.pid, java) if pid]
        return pids + (python_children(java) if java else [])


def register_batched(
    management_url: str, archive: str, name: str, batch_size: int, delay_ms: int
) -> dict[str, object]:
    """Register `<archive>.mar` as `name` at TorchServe batch `batch_size` with `delay_ms` of
    delay, one worker, synchronously; TorchServe's description of it.

    Explicit register parameters override an archive's model-config.yaml in TorchServe 0.12.
    Raises RuntimeError when TorchServe refuses the registration or serves it with another
    batch size or delay.
    """
    with httpx.Client(trust_env=False, timeout=REGISTER_TIMEOUT_S) as client:
        answer = client.post(
            f"{management_url}/models",
            params={
                "url": f"{archive}.mar",
                "model_name": name,
                "batch_size": str(batch_size),
                "max_batch_delay": str(delay_ms),
                "initial_workers": "1",
                "synchronous": "true",
            },
        )
        if answer.status_code != 200:
            raise RuntimeError(f"registering {name}: {answer.status_code} {answer.text}")
        described = client.get(f"{management_url}/models/{name}")
        described.raise_for_status()
    model: dict[str, object] = described.json()[0]
    served = (model.get("batchSize"), model.get("maxBatchDelay"))
    if served != (batch_size, delay_ms):
        raise RuntimeError(
            f"{name} is served at batch {served[0]}, {served[1]} ms, not "
            f"{batch_size}, {delay_ms} ms: the register parameters were ignored"
        )
    return model


def steady_rss(pids: tuple[int, ...]) -> int:
    """The largest RSS among `pids` now."""
    return max((rss_bytes(pid) for pid in pids), default=0)


@contextlib.contextmanager
def running_stack(store: Path, run_dir: Path) -> Iterator[Stack]:
    """TorchServe (no model yet) and the gateway, on free loopback ports; both stopped on exit."""
    with (
        running_torchserve(store, run_dir, models=[]) as torchserve,
        running_gateway(torchserve) as gateway,
    ):
        yield Stack(torchserve, gateway)
