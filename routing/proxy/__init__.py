"""One request's life: its context, the pipeline of stages, the ASGI and Django entries."""
