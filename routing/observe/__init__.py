"""What the gateway tells its operators: metrics, the access log, traces, traffic summaries and
the health endpoints."""
