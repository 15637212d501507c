"""TorchServe's per-batch PredictionTime metric line is dropped in the worker; others are kept.

Emitted through TorchServe's own metric class (ts.metrics.caching_metric.CachingMetric), as
ts/service.py emits it for every batch.
"""

import logging
from pathlib import Path

import pytest

from handlers.torchserve_entry import METRICS_LOGGER, drop_prediction_time_metric
from tests.unit.handlers.helpers import affine_state_dict
from tests.unit.handlers.test_torchserve_entry import initialized, model_dir, tensor_config


# Importing `ts` opens its version.txt without closing it (TorchServe's own code).
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <_io.FileIO name='[^']*ts/version.txt'"
    ":pytest.PytestUnraisableExceptionWarning"
)
def test_prediction_time_is_dropped_and_a_handlers_own_metric_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from ts.metrics.caching_metric import CachingMetric
    from ts.metrics.metric_type_enum import MetricTypes

    metrics_logger = logging.getLogger(METRICS_LOGGER)
    try:
        served = model_dir(tmp_path, affine_state_dict())
        initialized(served, tensor_config())
        initialized(served, tensor_config())  # a second model in the same worker process
        assert metrics_logger.filters.count(drop_prediction_time_metric) == 1
        with caplog.at_level(logging.INFO, logger=METRICS_LOGGER):
            for name in ("PredictionTime", "MyHandlerLatency"):
                metric = CachingMetric(name, "ms", ["ModelName", "Level"], MetricTypes.GAUGE)
                metric.add_or_update(1.5, ["digits", "Model"], "request-1")
        lines = [record.getMessage() for record in caplog.records]
        assert len(lines) == 1 and lines[0].startswith("[METRICS]MyHandlerLatency."), lines
    finally:
        metrics_logger.removeFilter(drop_prediction_time_metric)
