"""TorchServe's JVM gets a ForkJoinPool common pool of at least 2 threads.

Below 2, `CompletableFuture` starts a new thread for every async step: on a 2-core machine
TorchServe's worker thread started one per batch it sent the model.
"""

from pathlib import Path

import pytest

from launcher.torchserve import JVM_OPTIONS, TorchServe, common_pool_option
from tests.unit.launcher.test_ports_in_use import settings_for

PREFIX = "-Djava.util.concurrent.ForkJoinPool.common.parallelism="


@pytest.mark.parametrize(("cores", "pool"), [(1, 2), (2, 2), (3, 2), (4, 3), (16, 15)])
def test_the_pool_is_the_jvm_default_but_never_below_two(cores: int, pool: int) -> None:
    assert common_pool_option(cores) == f"{PREFIX}{pool}"


def test_the_frontend_command_sets_it_before_the_main_class(tmp_path: Path) -> None:
    command = TorchServe(settings_for(tmp_path)).command()
    main = command.index("org.pytorch.serve.ModelServer")
    options = command[:main]
    assert common_pool_option() in options
    assert [o for o in options if o.startswith(PREFIX)] == [common_pool_option()]
    assert all(option in options for option in JVM_OPTIONS)
