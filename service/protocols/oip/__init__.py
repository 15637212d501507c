"""The Open Inference Protocol (KServe v2 REST, with Triton's binary tensor extension).

- `datamodels`: the protocol's JSON bodies as pydantic models (they quote the spec);
- `tensors`: datatypes, byte layouts, the BYTES codec, `.npy`/`.npz` bodies (standard library);
- `codec`: an HTTP body to a request and its tensors, outputs to an HTTP body;
- `signatures`: a model's inputs and outputs, from its archive's `handler:` section;
- `instances`: tensors of N instances to N prediction bodies, N answers to output tensors;
- `errors`: `{"error": "..."}` for the gateway's errors on these routes;
- `routes`: the endpoints, and `serve_infer`, inference served from the gateway's middleware.

They call the protocol-neutral `service.prediction` (instances through the gateway's
batching) and `service.model_catalog` (which archive serves a version, its readiness).
"""
