"""gunicorn settings for production: Portier's recipe, run by `portier serve`.

One gunicorn master and uvicorn workers (gateway_site.serve.PortierWorker) sharing one listening
socket. Every value comes from the environment (.env.example); `portier serve --bind ...
--workers ...` (any gunicorn option) overrides this file.

Shutdown (SIGTERM to the master): the master closes its listening socket and sends SIGTERM to
every worker; each stops accepting, lets in-flight requests (streams included) finish for
PORTIER_GRACEFUL_TIMEOUT less a margin (gateway_site.serve.drain_seconds), cuts what is left,
runs lifespan shutdown (gateway_site.asgi) and exits 0. The master kills any worker still alive
at PORTIER_GRACEFUL_TIMEOUT and exits 0.
"""

from __future__ import annotations

import glob
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from gateway_site.env import env_int, env_str


def _cores() -> int:
    """CPUs this process may run on: its affinity mask (`docker --cpuset-cpus`), capped by a
    cgroup v2 CPU quota (`docker --cpus`, a Kubernetes CPU limit), which os.cpu_count() ignores:
    a container limited to 2 CPUs on a 64-core host must not start 64 workers."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def _count(name: str, default: int, minimum: int) -> int:
    """An integer setting from the environment, refused (gunicorn does not start) below minimum."""
    value = env_int(name, default)
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


bind = env_str("PORTIER_BIND", "0.0.0.0:8000")
# One worker per core: each is one event loop, and the proxy is CPU-bound on its core (bench/).
workers = _count("WEB_CONCURRENCY", _cores(), 1)
worker_class = "gateway_site.serve.PortierWorker"

# Seconds from SIGTERM to the end: the workers drain in-flight requests for most of it and keep
# the rest for lifespan shutdown (gateway_site.serve.drain_seconds); the master SIGKILLs whatever
# is left at the deadline. The orchestrator's own kill must come later: docker's comes after
# 10 s (compose: stop_grace_period), Kubernetes' after 30 s (terminationGracePeriodSeconds).
graceful_timeout = _count("PORTIER_GRACEFUL_TIMEOUT", 30, 0)
# Worker heartbeat: a worker whose event loop has not ticked for this long is killed and
# replaced (a loop blocked that long serves nobody). A worker recycled by max_requests stops
# ticking while it drains, so this must outlast graceful_timeout.
timeout = _count("PORTIER_WORKER_TIMEOUT", max(30, graceful_timeout + 5), graceful_timeout + 1)
# Seconds an idle client connection is kept: a little above the common load-balancer idle
# timeout (AWS ALB and NGINX upstream keep-alive: 60 s), so the balancer, not Portier, closes an
# idle connection and never sends a request on one Portier is closing (a 502). Raise it above
# yours (Google Cloud's load balancer: 600 s, so 620).
keepalive = _count("PORTIER_KEEPALIVE", 65, 1)
# Recycling: a worker is replaced (its in-flight requests drained) after this many requests,
# which bounds a slow leak in any library; the jitter (a random 0..jitter more, per worker) stops
# the workers, all started together, from recycling at the same moment. At ~2,000 req/s per
# saturated worker (bench/) 1,000,000 is one recycle every 8 minutes at most: rare enough that a
# worker's start (Django, the snapshot, pools) costs nothing. 0 turns recycling off.
max_requests = _count("PORTIER_MAX_REQUESTS", 1_000_000, 0)
max_requests_jitter = _count("PORTIER_MAX_REQUESTS_JITTER", 100_000, 0)

accesslog = None  # the gateway writes its own access log (portier.access)
forwarded_allow_ips = ""  # never let the server rewrite the client address from headers
# gunicorn 25+'s control socket (gunicornc) sits at one path per user ($HOME/.gunicorn), which
# every instance on a host would fight over; signals do all Portier needs (TERM, HUP, TTIN/TTOU).
control_socket_disable = True
# The heartbeat files: in memory, not on a container's overlay filesystem, where a slow disk
# write can stall a worker into a heartbeat timeout (gunicorn's FAQ).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108

# Every worker writes its metrics to files in one directory and /metrics sums them
# (prometheus-client's multiprocess mode). The variable must be in the environment before a worker
# imports prometheus_client, so it is set here, in the master, and the workers inherit it.
_TEMP_PREFIX = "portier-metrics-"
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=_TEMP_PREFIX)
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)


def on_starting(server: Any) -> None:
    # A previous run's files would add its counts to this one's.
    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(path)


def child_exit(server: Any, worker: Any) -> None:
    # A dead worker's in-flight gauge must stop counting; its counters stay, as counters must.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    # Only a directory made above (this file is read again on reload: judge by the name).
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    if os.path.dirname(path) == tempfile.gettempdir() and os.path.basename(path).startswith(
        _TEMP_PREFIX
    ):
        shutil.rmtree(path, ignore_errors=True)
