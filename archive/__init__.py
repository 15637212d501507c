"""The build step: turn checkpoints into validated, reproducible TorchServe archives.

- ``spec``: ``models.toml``, one ``[[model]]`` table per archive, as typed objects.
- ``gate``: load each checkpoint with the handler's own code and make it answer examples.
- ``packing``: stage the archive's files and write the ``.mar`` reproducibly and atomically.
- ``fingerprint``: what an archive was built from, so unchanged ones are skipped.
- ``build``: the steps above in order (``build_models``).
- ``inspection`` / ``convert``: ``python -m archive inspect`` and ``convert --trust-pickle``.
- ``cli``: the command line.

This package imports ``handlers`` (one loading path); ``handlers`` never imports it.
"""
