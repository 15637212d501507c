"""Start and stop the stack's processes: TorchServe (Java + Python workers) and the gateway.

`python -m launcher serve` runs both; `python -m launcher torchserve` and
`python -m launcher gateway` run one each (the containers' entry commands).
Nothing here imports torch: the launcher runs wherever the gateway runs.
"""
