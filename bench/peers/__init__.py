"""The peers: the same 28x28 CNN and JSON body served by other stacks, measured in the same run.

- `fastapi_app`: a plain FastAPI endpoint, the model in its own process (uvicorn).
- `litserve_app`: LitServe with its own batching (8 requests, 5 ms).
- TorchServe's own batching (8, 5 ms), the archive registered once more (`servers`).

`servers` starts and stops them on free loopback ports; `rows` measures them next to the
project's path and writes the table with the ratios "project / best peer".
"""
