"""The stock TorchServe peer's handler without Java: TorchServe's own `MockContext`.

The handler loads the archive's files (the model file and a state dict) the way TorchServe's
worker runs it: `BaseHandler.initialize` imports the model file from the model dir, on
`sys.path` as in the worker.
"""

import ast
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from ts.torch_handler.unit_tests.test_utils.mock_context import MockContext

from bench.mnist_cnn import MnistCnn
from bench.peers import stock_torchserve
from bench.peers.model import predict_rows
from bench.peers.torchserve_handler import THREADS_VARIABLE, MnistHandler

SERVED_FILES = (stock_torchserve.HANDLER_FILE, stock_torchserve.MODEL_FILE)


@pytest.fixture
def model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An unpacked archive: the model file and weights, the dir on sys.path (as in the worker);
    torch's thread count and the imported model module put back afterwards."""
    shutil.copyfile(stock_torchserve.MODEL_FILE, tmp_path / "mnist_cnn.py")
    torch.manual_seed(0)
    torch.save(MnistCnn().state_dict(), tmp_path / "mnist_cnn.pt")
    monkeypatch.syspath_prepend(str(tmp_path))
    threads = torch.get_num_threads()
    yield tmp_path
    torch.set_num_threads(threads)
    sys.modules.pop("mnist_cnn", None)


def handler_for(model_dir: Path) -> tuple[MnistHandler, MockContext]:
    context = MockContext(
        model_pt_file="mnist_cnn.pt", model_dir=str(model_dir), model_file="mnist_cnn.py"
    )
    handler = MnistHandler()
    handler.initialize(context)
    return handler, context


def test_a_batch_answers_the_model_in_process_one_list_per_request(model_dir: Path) -> None:
    handler, context = handler_for(model_dir)
    instances = torch.rand(3, 1, 28, 28)
    # As TorchServe's worker hands them over: a decoded JSON body, or raw bytes.
    data = [
        {"body": instances[0].tolist()},
        {"body": json.dumps(instances[1].tolist()).encode()},
        {"data": bytearray(json.dumps(instances[2].tolist()).encode())},
    ]
    answers = handler.handle(data, context)
    model = MnistCnn()
    model.load_state_dict(torch.load(model_dir / "mnist_cnn.pt", weights_only=True))
    expected = predict_rows(model.eval(), instances)
    assert len(answers) == 3 and all(len(answer) == 10 for answer in answers)
    torch.testing.assert_close(torch.tensor(answers), torch.tensor(expected), rtol=0, atol=1e-6)


def test_the_thread_count_comes_from_the_environment(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wanted = 1 if torch.get_num_threads() != 1 else 2
    monkeypatch.setenv(THREADS_VARIABLE, str(wanted))
    handler_for(model_dir)
    assert torch.get_num_threads() == wanted


def test_the_bench_passes_the_variable_the_handler_reads() -> None:
    assert stock_torchserve.THREADS_VARIABLE == THREADS_VARIABLE


@pytest.mark.parametrize("path", SERVED_FILES, ids=lambda p: p.name)
def test_the_served_files_import_nothing_of_this_project(path: Path) -> None:
    # They are all of the stock peer's serving path inside TorchServe: the standard library,
    # torch and TorchServe's own `ts` only.
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"torch", "ts"}, imported


def test_the_handler_file_holds_one_class() -> None:
    # TorchServe's loader takes the one class a handler file defines.
    tree = ast.parse(stock_torchserve.HANDLER_FILE.read_text())
    assert [node.name for node in tree.body if isinstance(node, ast.ClassDef)] == ["MnistHandler"]
