"""The served gateway loads the control plane (admin, management API, DRF) on first use only.

A worker that proxies, answers probes and serves /metrics holds ~20 MiB less than one that has
served the admin (gateway_site.admin_loading); the first admin request still works, however
many arrive at once, and proxied requests keep flowing meanwhile.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_route, make_service, publish
from tests.servers import ServerThread, uvicorn_gateway

pytestmark = pytest.mark.django_db(transaction=True)

MIB = 1024 * 1024


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def test_the_control_plane_is_loaded_with_its_first_request_not_at_start(
    upstream: ServerThread,
) -> None:
    make_route(make_service("lazy-admin", upstream.url), "/lazy-admin")
    publish()
    with uvicorn_gateway() as gateway, httpx.Client(base_url=gateway.url, timeout=30) as http:
        # The data plane's own work: proxying, probes, metrics, the catalogue.
        for _ in range(50):
            assert http.get("/lazy-admin/ping").status_code == 200
        for path in ("/health", "/health/live", "/health/ready", "/metrics", "/api-docs"):
            assert http.get(path).status_code == 200, path
        before = resident_bytes(gateway.process.pid)

        def first_admin_page(_: int) -> httpx.Response:
            return http.get("/admin/login/")

        def proxied(_: int) -> int:
            return http.get("/lazy-admin/ping").status_code

        with ThreadPoolExecutor(8) as pool:
            loading = pool.map(first_admin_page, range(4))
            during = list(pool.map(proxied, range(20)))
            pages = list(loading)
        after = resident_bytes(gateway.process.pid)

        assert [page.status_code for page in pages] == [200] * 4
        assert all('name="username"' in page.text for page in pages)
        assert during == [200] * 20
        # The admin's modules arrived with the first admin page, not before it.
        assert after - before > 10 * MIB, (before / MIB, after / MIB)
        assert http.get("/admin/api/routes").status_code == 401
        assert http.get("/registry/services/lazy-admin/instances").status_code == 401
        assert http.post("/auth/token", json={}).status_code == 400
