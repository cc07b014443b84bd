"""A Redis Cluster and a Sentinel-watched master of the tests' own, on loopback ports: the two
topologies production runs beside a single Redis. Nothing is kept on disk."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.faults.redis_server import RedisServer
from tests.servers import free_port

__all__ = ["MASTER_NAME", "RedisCluster", "SentinelSetup", "TlsRedis"]

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
MASTER_NAME = "portier-master"


def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if condition():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _cluster_port() -> int:
    """A free port whose cluster bus port (the port + 10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class RedisCluster:
    """Three masters (each with `replicas` replicas), every slot assigned (`redis-cli --cluster
    create`). A replica is promoted once its master has been unreachable for NODE_TIMEOUT_MS."""

    NODE_TIMEOUT_MS = 2000

    def __init__(self, masters: int = 3, replicas: int = 0) -> None:
        self.replicas = replicas
        self.nodes = [
            RedisServer(
                *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                *("--cluster-node-timeout", str(self.NODE_TIMEOUT_MS)),
                port=_cluster_port(),
            )
            for _ in range(masters * (1 + replicas))
        ]
        self.url = self.nodes[0].url

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                *(REDIS_CLI, "--cluster", "create"),
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                *("--cluster-replicas", str(self.replicas), "--cluster-yes"),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for node in self.nodes:
            client = redis.Redis(port=node.port, socket_timeout=1)
            wait_until(
                lambda c=client: c.cluster("INFO")["cluster_state"] == "ok",
                30,
                f"the cluster to be ready on {node.port}",
            )
            client.close()
        return self

    def master_of(self, key: str) -> RedisServer:
        """The node that serves `key` now (its slot's master)."""
        for node in self.nodes:
            client = redis.Redis(port=node.port, socket_timeout=1)
            try:
                role = client.execute_command("ROLE")[0]
                holds = role in (b"master", "master") and client.exists(key)
            except redis.RedisError:  # a node killed by the test
                holds = False
            finally:
                client.close()
            if holds:
                return node
        raise AssertionError(f"no master holds {key!r}")

    def keys_per_node(self) -> list[int]:
        counts = []
        for node in self.nodes:
            client = redis.Redis(port=node.port, socket_timeout=1)
            counts.append(client.dbsize())
            client.close()
        return counts

    def close(self) -> None:
        for node in self.nodes:
            node.close()


class SentinelSetup:
    """One master, one replica of it, and one sentinel watching them (a quorum of 1: the tests
    order the failover with SENTINEL FAILOVER, which needs no vote)."""

    def __init__(self) -> None:
        self.master = RedisServer()
        self.replica = RedisServer("--replicaof", "127.0.0.1", str(self.master.port))
        self.sentinel = RedisServer(
            "--sentinel",
            config=(
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 1\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                f"sentinel failover-timeout {MASTER_NAME} 10000\n"
            ),
        )
        self.sentinels = f"127.0.0.1:{self.sentinel.port}"

    def start(self) -> SentinelSetup:
        self.master.start()
        self.replica.start()
        self.sentinel.start()
        replica = redis.Redis(port=self.replica.port, socket_timeout=1)
        wait_until(
            lambda: replica.info("replication").get("master_link_status") == "up",
            30,
            "the replica to sync",
        )
        replica.close()
        wait_until(self._replica_known, 30, "the sentinel to find the replica")
        return self

    def _sentinel(self) -> redis.Redis:
        return redis.Redis(port=self.sentinel.port, socket_timeout=1, decode_responses=True)

    def _replica_known(self) -> bool:
        with self._sentinel() as client:
            replicas = client.sentinel_slaves(MASTER_NAME)
        return any(r["is_slave"] and not (r["is_sdown"] or r["is_disconnected"]) for r in replicas)

    def master_port(self) -> int:
        with self._sentinel() as client:
            _, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
        return int(port)

    def failover(self) -> None:
        """Promote the replica, and wait until the sentinel names it and it takes writes."""
        with self._sentinel() as client:
            client.sentinel_failover(MASTER_NAME)
        wait_until(lambda: self.master_port() == self.replica.port, 30, "the failover")
        promoted = redis.Redis(port=self.replica.port, socket_timeout=1)
        wait_until(lambda: promoted.set("portier-probe", 1), 30, "the new master to take writes")
        promoted.close()

    def close(self) -> None:
        for server in (self.sentinel, self.replica, self.master):
            server.close()


class TlsRedis:
    """A Redis that speaks only TLS (no plain port), with a certificate for 127.0.0.1 signed by
    a CA of the test's own; clients trust that CA through the URL (`ssl_ca_certs`)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="portier-redis-tls-"))
        self.ca = self.workdir / "ca.pem"
        cert, key = self.workdir / "redis.pem", self.workdir / "redis.key"
        _issue_certificates(self.ca, cert, key)
        self.server = RedisServer(
            *("--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"),
            *("--tls-cert-file", str(cert), "--tls-key-file", str(key)),
            *("--tls-ca-cert-file", str(self.ca)),
            port=self.port,
        )
        self.url = self.server.url = f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca}"

    def start(self) -> TlsRedis:
        self.server.start()  # its readiness check speaks TLS too (the URL above)
        return self

    def close(self) -> None:
        self.server.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _issue_certificates(ca_path: Path, cert_path: Path, key_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portier test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
