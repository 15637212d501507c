"""deploy/kserve/inferenceservice.yaml: an InferenceService for the export's layout.

No KServe runs here and kubernetes-validate ships no KServe schema: the fields KServe defines
are checked by name below, and the container fields it embeds from Kubernetes (resources,
securityContext) are validated strictly as part of a Pod.
"""

import re
import shlex
from typing import Any

import kubernetes_validate
import pytest
import yaml

from archive import cli
from archive.kserve_export import KSERVE_MODEL_STORE
from tests.unit.docker.deploy_files import REPO_ROOT

MANIFEST = REPO_ROOT / "deploy" / "kserve" / "inferenceservice.yaml"
SERVICE: dict[str, Any] = yaml.safe_load(MANIFEST.read_text())


def test_an_inference_service_for_kserves_pytorch_runtime_over_v2() -> None:
    assert SERVICE["apiVersion"] == "serving.kserve.io/v1beta1"
    assert SERVICE["kind"] == "InferenceService"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", SERVICE["metadata"]["name"])
    model = SERVICE["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "pytorch"
    assert model["protocolVersion"] == "v2"
    assert re.match(r"(gs|s3|pvc|https?)://", model["storageUri"])


def test_the_embedded_container_fields_are_valid_kubernetes() -> None:
    model = SERVICE["spec"]["predictor"]["model"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "predictor"},
        "spec": {
            "containers": [
                {
                    "name": "kserve-container",
                    "image": "kserve-torchserve",
                    "resources": model["resources"],
                    "securityContext": model["securityContext"],
                }
            ]
        },
    }
    kubernetes_validate.validate(pod, "1.30.0", strict=True)
    context = model["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_the_documented_export_command_is_the_real_one() -> None:
    """The manifest's comment says how to fill storageUri: that command must parse."""
    [line] = [
        line.lstrip("# ").strip()
        for line in MANIFEST.read_text().splitlines()
        if line.lstrip("# ").startswith("python -m archive export-kserve")
    ]
    argv = shlex.split(line)
    assert argv[:3] == ["python", "-m", "archive"]
    args = cli.make_parser().parse_args(argv[3:])
    assert args.run is cli.run_export_kserve


def test_the_export_points_torchserve_where_kserve_mounts_the_storage_uri() -> None:
    # KServe's storage initializer downloads storageUri to /mnt/models.
    assert KSERVE_MODEL_STORE == "/mnt/models/model-store"


@pytest.mark.parametrize("field", ["minReplicas", "maxReplicas"])
def test_replicas_are_bounded(field: str) -> None:
    predictor = SERVICE["spec"]["predictor"]
    assert (
        isinstance(predictor[field], int) and predictor["minReplicas"] <= predictor["maxReplicas"]
    )
