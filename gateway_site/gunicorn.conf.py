"""gunicorn settings for production: uvicorn workers running Portier's serving options."""

import multiprocessing
import os

bind = os.environ.get("PORTIER_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
worker_class = "gateway_site.serve.PortierWorker"
graceful_timeout = int(os.environ.get("PORTIER_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("PORTIER_KEEPALIVE", "5"))
max_requests = int(os.environ.get("PORTIER_MAX_REQUESTS", "0"))
max_requests_jitter = int(os.environ.get("PORTIER_MAX_REQUESTS_JITTER", "0"))
accesslog = None  # the gateway writes its own access log
forwarded_allow_ips = ""  # never let the server rewrite the client address from headers
