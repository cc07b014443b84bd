"""gunicorn settings for production: uvicorn workers running Portier's serving options."""

import glob
import multiprocessing
import os
import shutil
import tempfile

bind = os.environ.get("PORTIER_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
worker_class = "gateway_site.serve.PortierWorker"
graceful_timeout = int(os.environ.get("PORTIER_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("PORTIER_KEEPALIVE", "5"))
max_requests = int(os.environ.get("PORTIER_MAX_REQUESTS", "0"))
max_requests_jitter = int(os.environ.get("PORTIER_MAX_REQUESTS_JITTER", "0"))
accesslog = None  # the gateway writes its own access log
forwarded_allow_ips = ""  # never let the server rewrite the client address from headers

# Every worker writes its metrics to files in one directory and /metrics sums them
# (prometheus-client's multiprocess mode). The variable must be in the environment before a worker
# imports prometheus_client, so it is set here, in the master, and the workers inherit it.
_TEMP_PREFIX = "portier-metrics-"
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=_TEMP_PREFIX)
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)


def on_starting(server):
    # A previous run's files would add its counts to this one's.
    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(path)


def child_exit(server, worker):
    # A dead worker's in-flight gauge must stop counting; its counters stay, as counters must.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    # Only a directory made above (this file is read again on reload: judge by the name).
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    if os.path.dirname(path) == tempfile.gettempdir() and os.path.basename(path).startswith(
        _TEMP_PREFIX
    ):
        shutil.rmtree(path, ignore_errors=True)
