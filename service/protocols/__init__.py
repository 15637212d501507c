"""The wire protocols the gateway speaks besides TorchServe's own: each adapts its requests
to the protocol-neutral prediction path (`service.prediction`) and back."""
