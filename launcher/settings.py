"""The launcher's settings, read from the environment once at start-up.

The names are shared with the gateway (`service.settings.GatewaySettings`) and the
docker deployment, so they carry no prefix: `GATEWAY_PORT`, `TORCHSERVE_INFERENCE_PORT`...
"""

from pathlib import Path
from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Port = Annotated[int, Field(ge=1, le=65535)]


class LauncherSettings(BaseSettings):
    """Where each process listens and where TorchServe keeps its files.

    Every default binds to 127.0.0.1: nothing is reachable from another machine unless
    the deployment says so (the docker compose file sets `TORCHSERVE_BIND_HOST=0.0.0.0`
    on its internal network).
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    gateway_host: str = "127.0.0.1"
    gateway_port: Port = 8000

    torchserve_bind_host: str = "127.0.0.1"
    torchserve_inference_port: Port = 8080
    torchserve_management_port: Port = 8081
    torchserve_metrics_port: Port = 8082
    torchserve_grpc_inference_port: Port = 7070
    torchserve_grpc_management_port: Port = 7071
    # TorchServe's `initial_worker_port`: workers listen on Unix sockets named
    # `<tmpdir>/.ts.sock.<port>`, so two TorchServes sharing a temp dir must differ here.
    torchserve_worker_port: Port = 9000
    # One worker per model: on the 2-core machines this stack targets, a second worker
    # only competes with the first (and with the JVM and the gateway) for the same cores.
    torchserve_workers_per_model: Annotated[int, Field(ge=1)] = 1

    model_store: Path = Path("model_store")
    run_dir: Path = Path("run")
