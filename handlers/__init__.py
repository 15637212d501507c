"""The model side of the project: everything that runs inside a TorchServe worker.

One loading path, shared by the build step (``archive/``) and the TorchServe handler:

- ``checkpoint``: read any supported checkpoint file into a clean ``state_dict``.
- ``model_loading``: import the model class, build it, load the weights with a key report.
- ``device``: pick the device TorchServe assigned and size torch's thread pool.
- ``settings``: the handler's settings, read from the archive's ``model-config.yaml``.
- ``inputs``: a model's inputs (shapes with ``-1``, bounds) and collation into model calls.
- ``decoding``: JSON, ``.npy`` and ``.npz`` bodies to arrays.
- ``tasks``: one module per task (tensor, image, text: decode, collate, encode), a registry.
- ``batch``: run one batch of requests through the model's method, failing bad requests alone.
- ``predictor``: the above wired together; ``torchserve_entry`` adapts it to TorchServe.
- ``integrity``: the sha256 manifest that archives carry and the handler verifies.

This package imports torch and nothing of ours outside itself, so it can travel inside a
``.mar`` and run on a stock TorchServe.
"""
