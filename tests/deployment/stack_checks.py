"""Checks on the running compose stack, through the port it publishes on 127.0.0.1.

Each function raises CheckFailed with what it saw; compose_check runs them as steps.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any

import httpx

from tests.deployment.engine import PrivateEngine
from tests.deployment.host import run
from tests.deployment.report import CheckFailed, expect
from tests.deployment.requests_used import Prediction, manage, predict

PROJECT = "torchserve-gateway-stack"  # `name:` in docker/compose.yaml
GATEWAY_UID = "10001"
# LauncherSettings' defaults, which the TorchServe image keeps: REST, gRPC and metrics.
TORCHSERVE_PORTS = (8080, 8081, 8082, 7070, 7071)
DOWN_ANSWER_WITHIN_S = 10.0  # generous: the gateway answers 503 at once when TorchServe is gone
HEALTHY_WITHIN_S = 300.0


@dataclass(frozen=True)
class Stack:
    engine: PrivateEngine
    url: str  # http://127.0.0.1:<published port>

    def container(self, service: str) -> str:
        ids = self.engine.docker(
            "ps",
            "--all",
            "--quiet",
            "--filter",
            f"label=com.docker.compose.project={PROJECT}",
            "--filter",
            f"label=com.docker.compose.service={service}",
        ).split()
        expect(len(ids) == 1, f"{len(ids)} containers for the {service} service: {ids}")
        return ids[0]

    def inspect(self, container: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = json.loads(self.engine.docker("inspect", container))
        return found[0]


def readyz_lists_every_archive(stack: Stack) -> None:
    listing = stack.engine.docker("exec", stack.container("torchserve"), "ls", "/srv/model_store")
    archives = {name.removesuffix(".mar") for name in listing.split() if name.endswith(".mar")}
    expect(bool(archives), "the TorchServe image holds no archive in /srv/model_store")
    response = httpx.get(f"{stack.url}/readyz", timeout=30)
    expect(response.status_code == 200, f"/readyz {response.status_code}: {response.text[:300]}")
    body = response.json()
    expect(body.get("ready") is True, f"/readyz is not ready: {body}")
    models = body.get("models", {})
    expect(set(models) == archives, f"/readyz models {sorted(models)} != archives {archives}")
    expect(all(m.get("ready") for m in models.values()), f"a model is not ready: {models}")


def predictions_match(
    stack: Stack, bodies: list[Prediction], reference: list[tuple[int, Any]]
) -> None:
    with httpx.Client(timeout=60) as client:
        for prediction, (status, expected) in zip(bodies, reference, strict=True):
            expect(status == 200, f"make serve answered {status} for {prediction.model}")
            response = predict(client, stack.url, prediction)
            expect(
                response.status_code == 200,
                f"{prediction.model}: {response.status_code} {response.text[:300]}",
            )
            expect(
                response.json() == expected,
                f"{prediction.model}: container {response.json()} != make serve {expected}",
            )


def management_works(stack: Stack) -> None:
    with httpx.Client(timeout=120) as client:
        refused = client.get(f"{stack.url}/models")
        expect(refused.status_code == 401, f"GET /models without a key: {refused.status_code}")
        listed = manage(client, "GET", f"{stack.url}/models")
        expect(listed.status_code == 200, f"GET /models {listed.status_code}: {listed.text}")
        names = {m["modelName"] for m in listed.json()["models"]}
        expect({"digits", "digits-tensor"} <= names, f"GET /models lists {names}")
        for workers in (2, 1):
            scaled = manage(
                client, "PUT", f"{stack.url}/models/digits?min_worker={workers}&synchronous=true"
            )
            expect(
                scaled.status_code == 200, f"scale to {workers}: {scaled.status_code} {scaled.text}"
            )
            described = manage(client, "GET", f"{stack.url}/models/digits")
            expect(described.status_code == 200, f"GET /models/digits {described.status_code}")
            model = described.json()[0]
            expect(model["modelName"] == "digits", f"described {model.get('modelName')}")
            expect(model["minWorkers"] == workers, f"minWorkers {model['minWorkers']} != {workers}")


def torchserve_is_unreachable_from_the_host(stack: Stack) -> None:
    details = stack.inspect(stack.container("torchserve"))
    bindings = details["HostConfig"].get("PortBindings") or {}
    expect(not bindings, f"TorchServe publishes {bindings}")
    published = {
        port: hosts for port, hosts in details["NetworkSettings"]["Ports"].items() if hosts
    }
    expect(not published, f"TorchServe's ports bound on the host: {published}")
    networks = list(details["NetworkSettings"]["Networks"])
    expect(networks == [f"{PROJECT}_backend"], f"TorchServe is on {networks}")
    backend = json.loads(stack.engine.docker("network", "inspect", f"{PROJECT}_backend"))[0]
    expect(backend["Internal"] is True, "the backend network is not internal")
    # Every address of this host (loopback, its interfaces, the engine's bridges).
    addresses = ["127.0.0.1"]
    for link in json.loads(run(["ip", "-j", "address", "show"])):
        addresses += [a["local"] for a in link.get("addr_info", []) if a.get("family") == "inet"]
    open_ports = [
        f"{address}:{port}"
        for address in sorted(set(addresses))
        for port in TORCHSERVE_PORTS
        if _connects(address, port)
    ]
    expect(not open_ports, f"TorchServe's ports answer on the host: {open_ports}")


def gateway_runs_unprivileged(stack: Stack) -> None:
    container = stack.container("gateway")
    host_config = stack.inspect(container)["HostConfig"]
    config = stack.inspect(container)["Config"]
    expect(config["User"].split(":")[0] == GATEWAY_UID, f"gateway user {config['User']!r}")
    expect(host_config["ReadonlyRootfs"] is True, "the gateway's root file system is writable")
    expect(host_config["CapDrop"] == ["ALL"], f"CapDrop {host_config['CapDrop']}")
    expect(not host_config.get("CapAdd"), f"CapAdd {host_config.get('CapAdd')}")
    expect(host_config["Privileged"] is False, "the gateway is privileged")
    expect(
        "no-new-privileges:true" in (host_config.get("SecurityOpt") or []),
        f"SecurityOpt {host_config.get('SecurityOpt')}",
    )
    # The same seen from inside: the process's uid and effective capabilities, and a write.
    inside = stack.engine.docker(
        "exec",
        container,
        "sh",
        "-c",
        "id -u; grep CapEff /proc/self/status;"
        " touch /written 2>/dev/null && echo writable || echo read-only",
    ).split("\n")
    expect(inside[0] == GATEWAY_UID, f"uid inside the gateway: {inside[0]}")
    expect(inside[1].split()[-1] == "0000000000000000", f"capabilities inside: {inside[1]}")
    expect(inside[2] == "read-only", f"the gateway's / is {inside[2]}")


def gateway_image_holds_no_torch(stack: Stack, image: str) -> None:
    probe = (
        "import importlib.metadata as m, importlib.util as u; "
        "names = sorted(d.metadata['Name'].lower() for d in m.distributions()); "
        "print(u.find_spec('torch') is None,"
        " [n for n in names if n == 'torch' or n.startswith('nvidia')])"
    )
    answer = stack.engine.docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", probe
    ).strip()
    expect(answer == "True []", f"torch in the gateway image: {answer}")


def torchserve_restart_is_survived(
    stack: Stack, prediction: Prediction, expected: Any
) -> dict[str, float]:
    """Stop TorchServe: 503 at once; start it: healthy, then answered, same gateway container."""
    gateway = stack.container("gateway")
    before = stack.inspect(gateway)["State"]["StartedAt"]
    torchserve = stack.container("torchserve")
    figures: dict[str, float] = {}
    stack.engine.docker("stop", torchserve, timeout=120)
    with httpx.Client(timeout=60) as client:
        began = time.monotonic()
        down = predict(client, stack.url, prediction)
        figures["503_answer_s"] = time.monotonic() - began
        expect(down.status_code == 503, f"while TorchServe is down: {down.status_code} {down.text}")
        expect(
            figures["503_answer_s"] < DOWN_ANSWER_WITHIN_S,
            f"the 503 took {figures['503_answer_s']:.1f} s",
        )
        began = time.monotonic()
        stack.engine.docker("start", torchserve)
        figures["healthy_after_start_s"] = _wait_healthy(stack, torchserve)
        up = predict(client, stack.url, prediction)
        figures["answered_after_start_s"] = time.monotonic() - began
        expect(up.status_code == 200, f"once healthy again: {up.status_code} {up.text}")
        expect(up.json() == expected, f"once healthy again: {up.json()} != {expected}")
    expect(stack.container("gateway") == gateway, "the gateway container was replaced")
    after = stack.inspect(gateway)["State"]
    expect(after["StartedAt"] == before, "the gateway container restarted")
    expect(after["Running"] is True, "the gateway container is not running")
    return figures


def _wait_healthy(stack: Stack, container: str) -> float:
    began = time.monotonic()
    status = ""
    while time.monotonic() - began < HEALTHY_WITHIN_S:
        status = stack.inspect(container)["State"].get("Health", {}).get("Status", "")
        if status == "healthy":
            return time.monotonic() - began
        time.sleep(1)
    raise CheckFailed(f"TorchServe not healthy {HEALTHY_WITHIN_S:.0f} s after start: {status}")


def no_container_left(stack: Stack) -> None:
    left = stack.engine.docker(
        "ps", "--all", "--quiet", "--filter", f"label=com.docker.compose.project={PROJECT}"
    ).split()
    expect(not left, f"containers left after make down: {left}")


def _connects(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2):
            return True
    except OSError:
        return False
