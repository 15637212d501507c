"""The peers: the same 28x28 CNN and JSON body served by other stacks, measured in the same run.

- `fastapi_app`: a plain FastAPI endpoint, the model in its own process (uvicorn).
- `litserve_app`: LitServe with its own batching (8 requests, 5 ms).
- `stock_torchserve`: TorchServe 0.12 as it ships (its `torchserve` command, log4j2.xml and
  defaults), its batching at 8 / 5 ms, with the handler a user writes from its docs
  (`torchserve_handler`).
- Not a peer, a reference row: this project's archive registered once more in the bench's
  TorchServe with the same batching, called without the gateway (`servers`).

`running` holds what a running server is and how its processes are stopped; `servers`
starts and stops them all on free loopback ports and says which rows are peers; `rows`
measures them next to the project's path and writes the table with the ratios "project /
best peer" (over the peers only); `compare` is the phase as `python -m bench` runs it.
"""
