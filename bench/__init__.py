"""`python -m bench`: the stack's benchmark (issue 7).

Measures, in one run, interleaved and repeated: each model in-process (batch 1 and batch B),
TorchServe directly, and the gateway in front of it, at concurrency 1 and 32; with CPU per
request of every process, peak RSS, and time from registering a model to its first answer.

- `inprocess`: the model alone, as the worker runs it (the one loading path, `handlers`).
- `loadgen`: HTTP load (wrk with `post.lua`, or a small asyncio fallback).
- `processes`: which pid is which (gateway, TorchServe's frontend, a model's workers),
  CPU-time deltas and an RSS sampler.
- `stack`: builds the archives and starts TorchServe and the gateway (launcher classes).
- `report`: medians, ratios against the targets, the markdown table and the PNG chart.
- `cli`: the run itself.
"""
