"""The compose deployment built and run on a real Docker engine (`make docker-test`).

`python -m tests.deployment.compose_check` installs what it needs, starts a private dockerd,
builds both images with `make docker-build`'s command, brings the stack up with `make up`,
checks it through the published port, and puts the host back as it was.
"""
