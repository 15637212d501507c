"""deploy/kubernetes/: valid Kubernetes objects, wired together, as locked down as compose.

No cluster runs here: `kubernetes-validate` checks every object against the Kubernetes
OpenAPI schemas it ships (strict: an unknown field is an error), offline, for the oldest
supported release (1.30) and the newest the package knows. The rest reads the manifests the
way the cluster would join them (selectors, named ports, references) and holds them to the
posture tests/unit/docker checks for compose: non-root, read-only root, no capabilities,
no privilege escalation, writable paths on memory-backed volumes.
"""

import re
import socket
import tempfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from launcher.settings import LauncherSettings
from service.settings import GatewaySettings
from tests.unit.docker.deploy_files import DOCKER_DIR, REPO_ROOT, Stage, parse_dockerfile
from tests.unit.docker.test_deploy_contract import SERVICES, accepted_env_names

MANIFEST_DIR = REPO_ROOT / "deploy" / "kubernetes"
OLDEST_SUPPORTED = "1.30.0"
VERSIONS = [OLDEST_SUPPORTED, kubernetes_validate.utils.latest_version()]


def load_objects() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(MANIFEST_DIR.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append((path, document))
    return found


OBJECTS = load_objects()


def the(kind: str, name: str) -> dict[str, Any]:
    matches = [o for _, o in OBJECTS if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [o for _, o in OBJECTS if o["kind"] == kind]


def pod_spec(deployment: str) -> dict[str, Any]:
    spec: dict[str, Any] = the("Deployment", deployment)["spec"]["template"]["spec"]
    return spec


def pod_labels(deployment: str) -> dict[str, str]:
    labels: dict[str, str] = the("Deployment", deployment)["spec"]["template"]["metadata"]["labels"]
    return labels


def container(deployment: str) -> dict[str, Any]:
    [only] = pod_spec(deployment)["containers"]
    return dict(only)


def all_containers() -> list[tuple[str, dict[str, Any]]]:
    return [
        (d["metadata"]["name"], c)
        for d in of_kind("Deployment")
        for c in d["spec"]["template"]["spec"].get("initContainers", [])
        + d["spec"]["template"]["spec"]["containers"]
    ]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def plain_env(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def port_number(c: dict[str, Any], port: int | str) -> int:
    """A container port given by number or by name, as a Service or probe names it."""
    for declared in c["ports"]:
        if port in (declared["containerPort"], declared.get("name")):
            return int(declared["containerPort"])
    raise AssertionError(f"container {c['name']} has no port {port!r}")


class TestSchemas:
    def test_the_manifests_hold_the_expected_objects(self) -> None:
        kinds = sorted((o["kind"], o["metadata"]["name"]) for _, o in OBJECTS)
        assert kinds == sorted(
            [
                ("Deployment", "torchserve"),
                ("Service", "torchserve"),
                ("HorizontalPodAutoscaler", "torchserve"),
                ("PodDisruptionBudget", "torchserve"),
                ("Deployment", "gateway"),
                ("Service", "gateway"),
                ("PodDisruptionBudget", "gateway"),
                ("NetworkPolicy", "torchserve-from-gateway-only"),
            ]
        )

    @pytest.mark.parametrize("version", VERSIONS)
    @pytest.mark.parametrize(
        "entry", OBJECTS, ids=[f"{p.name}:{o['kind']}/{o['metadata']['name']}" for p, o in OBJECTS]
    )
    def test_valid_under_strict_schemas_offline(
        self, entry: tuple[Path, dict[str, Any]], version: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def no_network(*args: object, **kwargs: object) -> None:
            raise AssertionError("kubernetes-validate tried to reach the network")

        monkeypatch.setattr(socket, "socket", no_network)
        monkeypatch.setattr(socket, "create_connection", no_network)
        _, document = entry
        # Raises ValidationError on an invalid object, SchemaNotFoundError on an unknown kind.
        kubernetes_validate.validate(document, version, strict=True)

    def test_strict_validation_rejects_an_unknown_field(self) -> None:
        """The check above can fail: a misspelt field is an error, not ignored."""
        deployment = the("Deployment", "torchserve")
        broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, OLDEST_SUPPORTED, strict=True)


class TestSecurityPosture:
    @pytest.mark.parametrize("deployment", ["torchserve", "gateway"])
    def test_pods_run_as_the_images_non_root_user_under_runtime_default_seccomp(
        self, deployment: str
    ) -> None:
        spec = pod_spec(deployment)
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True
        user = image_stage(deployment).all("USER")[-1].args
        assert f"{context['runAsUser']}:{context['runAsGroup']}" == user
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")

    @pytest.mark.parametrize(
        "entry", all_containers(), ids=[f"{d}/{c['name']}" for d, c in all_containers()]
    )
    def test_every_container_is_locked_down(self, entry: tuple[str, dict[str, Any]]) -> None:
        _, c = entry
        context = c["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False  # compose: no-new-privileges
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context.get("privileged", False) is False
        assert "runAsUser" not in context or context["runAsUser"] != 0
        assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]

    @pytest.mark.parametrize("deployment", ["torchserve", "gateway"])
    def test_writable_paths_are_memory_backed_volumes(self, deployment: str) -> None:
        """What compose mounts as tmpfs: HOME for both, RUN_DIR for TorchServe."""
        c = container(deployment)
        env = image_stage(deployment).env() | plain_env(c)
        writable = [Path(env["HOME"])]
        if deployment == "torchserve":
            writable.append(Path(env["RUN_DIR"]))
        volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
        for path in writable:
            [mount] = [m for m in c["volumeMounts"] if path.is_relative_to(m["mountPath"])]
            empty_dir = volumes[mount["name"]]["emptyDir"]
            assert empty_dir["medium"] == "Memory" and empty_dir["sizeLimit"], path

    @pytest.mark.parametrize("deployment", ["torchserve", "gateway"])
    def test_no_service_links_override_settings(self, deployment: str) -> None:
        """Kubernetes would set GATEWAY_PORT=tcp://... for the Service `gateway`."""
        assert pod_spec(deployment)["enableServiceLinks"] is False

    def test_only_gateway_pods_reach_torchserve_pods(self) -> None:
        [policy] = of_kind("NetworkPolicy")
        spec = policy["spec"]
        assert selects(spec["podSelector"]["matchLabels"], pod_labels("torchserve"))
        assert "Ingress" in spec["policyTypes"]
        [rule] = spec["ingress"]
        [source] = rule["from"]
        assert set(source) == {"podSelector"}, "pods only: no namespace or IP block"
        assert selects(source["podSelector"]["matchLabels"], pod_labels("gateway"))
        assert not selects(source["podSelector"]["matchLabels"], pod_labels("torchserve"))
        ts = container("torchserve")
        assert {p["port"] for p in rule["ports"]} == {
            port_number(ts, "inference"),
            port_number(ts, "management"),
        }

    def test_keys_come_from_a_secret_that_is_not_committed(self) -> None:
        assert of_kind("Secret") == []
        env = {e["name"]: e for e in container("gateway")["env"]}
        for name in ("GATEWAY_INFERENCE_KEYS", "GATEWAY_MANAGEMENT_KEYS"):
            assert "value" not in env[name]
            assert env[name]["valueFrom"]["secretKeyRef"]["key"] == name
        assert not any(
            "secret" in str(p).lower() for p in MANIFEST_DIR.iterdir() if p.suffix != ".yaml"
        )


def dockerfile(deployment: str) -> Path:
    return DOCKER_DIR / f"Dockerfile.{deployment}"


def image_stage(deployment: str) -> Stage:
    """The final stage of the image the deployment runs (its USER and ENV)."""
    text = dockerfile(deployment).read_text()
    # Global ARGs (before the first FROM) only parameterise FROM lines: not part of a stage.
    first_from = re.search(r"^FROM\s", text, re.MULTILINE)
    assert first_from, dockerfile(deployment)
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "Dockerfile"
        copy.write_text(text[first_from.start() :])
        return parse_dockerfile(copy)[-1]


class TestWiring:
    @pytest.mark.parametrize("deployment", ["torchserve", "gateway"])
    def test_images_are_the_compose_images(self, deployment: str) -> None:
        assert container(deployment)["image"] == SERVICES[deployment]["image"]

    def test_the_gateways_model_store_is_copied_from_the_torchserve_image(self) -> None:
        [init] = pod_spec("gateway")["initContainers"]
        assert init["image"] == SERVICES["torchserve"]["image"]
        store = image_stage("torchserve").env()["MODEL_STORE"]
        assert store in " ".join(init["command"])
        gateway_store = image_stage("gateway").env()["MODEL_STORE"]
        [mount] = [
            m for m in container("gateway")["volumeMounts"] if m["mountPath"] == gateway_store
        ]
        assert mount["readOnly"] is True
        [copied] = [m for m in init["volumeMounts"] if m["name"] == mount["name"]]
        assert copied["mountPath"] in " ".join(init["command"])

    def test_torchserve_runs_two_replicas_ready_on_ping(self) -> None:
        assert the("Deployment", "torchserve")["spec"]["replicas"] == 2
        c = container("torchserve")
        probe = c["readinessProbe"]["httpGet"]
        assert probe["path"] == "/ping"
        assert port_number(c, probe["port"]) == LauncherSettings().torchserve_inference_port

    def test_torchserve_ports_are_the_launchers(self) -> None:
        settings = LauncherSettings()
        c = container("torchserve")
        assert port_number(c, "inference") == settings.torchserve_inference_port
        assert port_number(c, "management") == settings.torchserve_management_port
        assert port_number(c, "metrics") == settings.torchserve_metrics_port

    def test_the_torchserve_service_is_headless_over_its_pods(self) -> None:
        service = the("Service", "torchserve")["spec"]
        assert service["clusterIP"] == "None"
        assert selects(service["selector"], pod_labels("torchserve"))
        c = container("torchserve")
        for port in service["ports"]:
            assert port_number(c, port["targetPort"]) == port["port"]

    def test_the_gateway_finds_every_torchserve_pod_through_the_headless_service(self) -> None:
        env = plain_env(container("gateway"))
        gateway = GatewaySettings(
            torchserve_backends_dns=env["TORCHSERVE_BACKENDS_DNS"],
            gateway_port=int(env["GATEWAY_PORT"]),
        )
        assert gateway.pooled and gateway.torchserve_backends_dns is not None
        dns = gateway.torchserve_backends_dns
        assert dns.host == the("Service", "torchserve")["metadata"]["name"]
        service_ports = {
            p["name"]: p["port"] for p in the("Service", "torchserve")["spec"]["ports"]
        }
        assert dns.inference_port == service_ports["inference"]
        assert dns.management_port == service_ports["management"]
        assert "TORCHSERVE_HOST" not in env, "one way to name the backends"

    def test_the_gateway_service_and_probes_use_its_port(self) -> None:
        c = container("gateway")
        port = int(plain_env(c)["GATEWAY_PORT"])
        assert port_number(c, "http") == port
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        service = the("Service", "gateway")["spec"]
        assert selects(service["selector"], pod_labels("gateway"))
        [exposed] = service["ports"]
        assert port_number(c, exposed["targetPort"]) == port

    @pytest.mark.parametrize("deployment", ["torchserve", "gateway"])
    def test_every_variable_set_is_read_by_the_launcher_or_the_gateway(
        self, deployment: str
    ) -> None:
        names = {e["name"] for e in container(deployment).get("env", [])}
        assert names - accepted_env_names() == set()

    def test_both_sides_share_the_body_limit(self) -> None:
        limits = {
            plain_env(container(d))["GATEWAY_MAX_BODY_BYTES"] for d in ("torchserve", "gateway")
        }
        assert limits == {str(GatewaySettings().gateway_max_body_bytes)}

    def test_the_autoscaler_and_budgets_point_at_existing_pods(self) -> None:
        hpa = the("HorizontalPodAutoscaler", "torchserve")["spec"]
        target = hpa["scaleTargetRef"]
        assert target["kind"] == "Deployment"
        the("Deployment", target["name"])
        assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] > hpa["minReplicas"]
        # CPU utilization is measured against requests: the pods must declare them.
        assert container(target["name"])["resources"]["requests"]["cpu"]
        budgets = of_kind("PodDisruptionBudget")
        for deployment in ("torchserve", "gateway"):
            assert any(
                selects(b["spec"]["selector"]["matchLabels"], pod_labels(deployment))
                for b in budgets
            ), deployment
