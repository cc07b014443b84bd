"""The proxy's own limits and timeouts: configuration polling, client deadlines, request sizes,
streams and WebSockets, reserved paths, health, operator access, metrics, the upstream pool,
audit writes and header hygiene."""

from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from gateway_site.env import env_bool, env_float, env_int, env_list, env_str

# --- Portier -------------------------------------------------------------------------------------
# How often each process checks the cache for a new configuration version (seconds): one Redis
# GET per process per interval (2/s each at 0.5), and a saved change is served everywhere within
# the interval plus a load (under a second, tests/faults/test_config_propagation.py).
PORTIER_CONFIG_POLL_INTERVAL = env_float("PORTIER_CONFIG_POLL_INTERVAL", 0.5)
if PORTIER_CONFIG_POLL_INTERVAL <= 0:
    raise ImproperlyConfigured("PORTIER_CONFIG_POLL_INTERVAL must be above 0")
# Deadlines for receiving a request (gateway_site.protocol), so a slow client cannot hold a
# connection forever: the whole head within HEADER_TIMEOUT seconds (else 408), the body within
# BODY_TIMEOUT seconds after the head plus one second per BODY_MIN_RATE bytes received.
PORTIER_CLIENT_HEADER_TIMEOUT = env_float("PORTIER_CLIENT_HEADER_TIMEOUT", 10.0)
PORTIER_CLIENT_BODY_TIMEOUT = env_float("PORTIER_CLIENT_BODY_TIMEOUT", 30.0)
PORTIER_CLIENT_BODY_MIN_RATE = env_float("PORTIER_CLIENT_BODY_MIN_RATE", 500.0)
for _name, _value in (
    ("PORTIER_CLIENT_HEADER_TIMEOUT", PORTIER_CLIENT_HEADER_TIMEOUT),
    ("PORTIER_CLIENT_BODY_TIMEOUT", PORTIER_CLIENT_BODY_TIMEOUT),
    ("PORTIER_CLIENT_BODY_MIN_RATE", PORTIER_CLIENT_BODY_MIN_RATE),
):
    if not _value > 0:  # also refuses nan
        raise ImproperlyConfigured(f"{_name} must be greater than 0, got {_value!r}")
# Size limits of a request (gateway_site.protocol, routing.proxy.stages.forward), NGINX-like:
# URL -> 414, header count or bytes -> 431, body -> 413 (a route may set its own body limit; the
# gateway's own paths also stay within Django's DATA_UPLOAD_MAX_MEMORY_SIZE, 2.5 MiB). A chunked
# upload up to CHUNKED_BUFFER_BYTES is read whole and forwarded with a Content-Length.
PORTIER_MAX_URL_BYTES = env_int("PORTIER_MAX_URL_BYTES", 8 * 1024)
PORTIER_MAX_HEADER_COUNT = env_int("PORTIER_MAX_HEADER_COUNT", 100)
PORTIER_MAX_HEADER_BYTES = env_int("PORTIER_MAX_HEADER_BYTES", 32 * 1024)
PORTIER_MAX_BODY_BYTES = env_int("PORTIER_MAX_BODY_BYTES", 10 * 1024 * 1024)
PORTIER_CHUNKED_BUFFER_BYTES = env_int("PORTIER_CHUNKED_BUFFER_BYTES", 1024 * 1024)
# The largest JSON body a route's body transform reads and rewrites (else 413).
PORTIER_TRANSFORM_BODY_BYTES = env_int("PORTIER_TRANSFORM_BODY_BYTES", 1024 * 1024)
# The largest answer a composite route reads from each of its backends (past it, that backend
# failed).
PORTIER_COMPOSITE_MAX_BYTES = env_int("PORTIER_COMPOSITE_MAX_BYTES", 1024 * 1024)
for _name, _value in (
    ("PORTIER_MAX_URL_BYTES", PORTIER_MAX_URL_BYTES),
    ("PORTIER_MAX_HEADER_COUNT", PORTIER_MAX_HEADER_COUNT),
    ("PORTIER_MAX_HEADER_BYTES", PORTIER_MAX_HEADER_BYTES),
    ("PORTIER_MAX_BODY_BYTES", PORTIER_MAX_BODY_BYTES),
    ("PORTIER_TRANSFORM_BODY_BYTES", PORTIER_TRANSFORM_BODY_BYTES),
    ("PORTIER_COMPOSITE_MAX_BYTES", PORTIER_COMPOSITE_MAX_BYTES),
):
    if _value < 1:
        raise ImproperlyConfigured(f"{_name} must be at least 1, got {_value!r}")
if PORTIER_CHUNKED_BUFFER_BYTES < 0:
    raise ImproperlyConfigured(
        f"PORTIER_CHUNKED_BUFFER_BYTES must be 0 (always stream) or more, got "
        f"{PORTIER_CHUNKED_BUFFER_BYTES!r}"
    )
# Server-sent events (text/event-stream answers): once the answer's head has come, the service's
# read timeout gives way to this one, the longest silence a stream may keep (routing.upstream.
# transport): a healthy stream that sends an event or a heartbeat now and then is never cut.
PORTIER_STREAM_IDLE_TIMEOUT = env_float("PORTIER_STREAM_IDLE_TIMEOUT", 300.0)
if PORTIER_STREAM_IDLE_TIMEOUT <= 0:
    raise ImproperlyConfigured(
        f"PORTIER_STREAM_IDLE_TIMEOUT must be more than 0, got {PORTIER_STREAM_IDLE_TIMEOUT!r}"
    )
# The largest WebSocket message relayed, either way (gateway_site.ws_protocol for the client's,
# routing.proxy.websocket for the upstream's): a bigger one closes the connection with 1009.
PORTIER_WEBSOCKET_MAX_MESSAGE_BYTES = env_int("PORTIER_WEBSOCKET_MAX_MESSAGE_BYTES", 1024 * 1024)
if PORTIER_WEBSOCKET_MAX_MESSAGE_BYTES < 1:
    raise ImproperlyConfigured(
        "PORTIER_WEBSOCKET_MAX_MESSAGE_BYTES must be at least 1, got "
        f"{PORTIER_WEBSOCKET_MAX_MESSAGE_BYTES!r}"
    )
# Paths the gateway serves itself (each one and everything below it); a route may not shadow them.
PORTIER_RESERVED_PATHS = (
    "/admin",
    "/api-docs",
    "/auth",
    "/health",
    "/metrics",
    "/registry",
    "/static",
)
# How often each process rebuilds its view of target health and registered instances from the
# cache (seconds): also how soon a circuit opened by one process is honoured by the others.
PORTIER_HEALTH_SYNC_INTERVAL = env_float("PORTIER_HEALTH_SYNC_INTERVAL", 0.5)
# The role (group) whose API keys or tokens may register instances over /registry/.
PORTIER_REGISTRAR_ROLE = env_str("PORTIER_REGISTRAR_ROLE", "registrar")
# Who may read the operator endpoints, which show internal addresses (/health/services, /metrics):
# callers from these networks (CIDRs), or with `Authorization: Bearer <PORTIER_OPS_TOKEN>`.
# Loopback only by default: behind a load balancer every client arrives from its private address.
PORTIER_OPS_NETWORKS = env_list("PORTIER_OPS_NETWORKS", ["127.0.0.0/8", "::1/128"])
PORTIER_OPS_TOKEN = env_str("PORTIER_OPS_TOKEN")
# Prometheus metrics at /metrics (operators only, as above). With several worker processes
# (gunicorn), prometheus-client's multiprocess mode keeps each process's values in files in this
# directory and /metrics sums them; gateway_site/gunicorn.conf.py sets it to a fresh directory
# when unset and empties it at start. It must be in the environment before the process starts
# (prometheus-client reads it at import). Unset: one process, values in memory.
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR")
if PROMETHEUS_MULTIPROC_DIR and not Path(PROMETHEUS_MULTIPROC_DIR).is_dir():
    raise ImproperlyConfigured("PROMETHEUS_MULTIPROC_DIR must name an existing directory")
# Percent-encoded slashes/backslashes let a path look like one route to the gateway and another to
# an upstream that decodes them; they are refused unless explicitly allowed.
PORTIER_ALLOW_ENCODED_SLASHES = env_bool("PORTIER_ALLOW_ENCODED_SLASHES", False)
# Upstream connection pool per process.
PORTIER_UPSTREAM_MAX_CONNECTIONS = env_int("PORTIER_UPSTREAM_MAX_CONNECTIONS", 512)
PORTIER_UPSTREAM_KEEPALIVE = env_int("PORTIER_UPSTREAM_KEEPALIVE", 128)
# Seconds an idle upstream connection is kept for reuse. Keep it below the upstreams' own idle
# timeout (uvicorn and Node: 5 s): an upstream that closes a connection just as the gateway
# reuses it fails that request, and a POST is not retried.
PORTIER_UPSTREAM_KEEPALIVE_EXPIRY = env_float("PORTIER_UPSTREAM_KEEPALIVE_EXPIRY", 4.0)

# `manage.py audit_purge` (run it daily from cron) deletes audit rows older than this many days.
PORTIER_AUDIT_RETENTION_DAYS = env_int("PORTIER_AUDIT_RETENTION_DAYS", 90)
if PORTIER_AUDIT_RETENTION_DAYS < 1:
    raise ImproperlyConfigured("PORTIER_AUDIT_RETENTION_DAYS must be at least 1")
# Seconds an audited request waits for its row before 503 audit_unavailable (a locked or unreachable
# database); the writing connection is given the same lock/statement timeout.
PORTIER_AUDIT_WRITE_TIMEOUT = env_float("PORTIER_AUDIT_WRITE_TIMEOUT", 2.0)
if not 0 < PORTIER_AUDIT_WRITE_TIMEOUT <= 60:
    raise ImproperlyConfigured("PORTIER_AUDIT_WRITE_TIMEOUT must be above 0 and at most 60")

# Header names with "_" are dropped before forwarding, as NGINX does: a framework behind the
# gateway may fold X_User_Id into X-User-Id. Allow them only if every upstream keeps them apart.
PORTIER_ALLOW_UNDERSCORE_HEADERS = env_bool("PORTIER_ALLOW_UNDERSCORE_HEADERS", False)
# Header-name prefixes an upstream treats as identity (e.g. x-acme-): stripped from every client
# request, like X-User-*, X-Consumer-* and the other built-in families (routing/proxy/headers.py).
PORTIER_IDENTITY_HEADER_PREFIXES = tuple(
    prefix.lower().replace("_", "-") for prefix in env_list("PORTIER_IDENTITY_HEADER_PREFIXES")
)
for _prefix in PORTIER_IDENTITY_HEADER_PREFIXES:
    if not all(c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^`|~") for c in _prefix):
        raise ImproperlyConfigured(
            f"PORTIER_IDENTITY_HEADER_PREFIXES: {_prefix!r} is not a header name prefix"
        )
