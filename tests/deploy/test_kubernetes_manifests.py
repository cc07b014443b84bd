"""deploy/kubernetes/ as a user applies it (`kubectl apply -k deploy/kubernetes/`).

Every manifest is valid against the Kubernetes API's schemas (kubernetes-validate, strict: an
unknown or misplaced field fails), and what the manifests promise is read from the YAML: the
probes ask /health/live and /health/ready with a Host the gateway allows, Kubernetes kills a pod
only after its drain, the memory request holds every worker, every variable set is a setting the
gateway reads (and accepts), and the Service, the budget, the autoscaler and the migration job
aim at the gateway's pods, port and image.
"""

from __future__ import annotations

import ast
import os
import re
import secrets
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from django.http.request import split_domain_port, validate_host

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = "kustomization.yaml"

# The oldest Kubernetes on which every field used here is stable (the preStop sleep action went
# stable in 1.34) and the newest whose schemas kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.34", "1.37")

# Measured RSS in MiB. A worker: its peak under load in bench/README.md's last run (jwt-rl-c50,
# one worker, 115.2 MiB; the 10-minute soak stays flat, lower). gunicorn's master: `portier
# serve` with two workers, idle (42 MiB; the master does not load the application).
WORKER_RSS_MIB = 115
MASTER_RSS_MIB = 42

# How the gateway reads its environment: gateway_site.env's readers in the settings package,
# and gunicorn.conf.py's _count (WEB_CONCURRENCY, PORTIER_GRACEFUL_TIMEOUT, ...).
READERS = {"env_str", "env_bool", "env_int", "env_float", "env_list", "_count"}
SETTINGS_SOURCES = (
    *sorted((ROOT / "gateway_site" / "settings").glob("*.py")),
    ROOT / "gateway_site" / "gunicorn.conf.py",
)
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")


def manifest_files() -> list[Path]:
    return sorted(path for path in MANIFESTS.iterdir() if path.name != KUSTOMIZATION)


@cache
def resources() -> tuple[dict[str, Any], ...]:
    return tuple(
        document
        for path in manifest_files()
        for document in yaml.safe_load_all(path.read_text())
        if document
    )


def resource(kind: str) -> dict[str, Any]:
    (found,) = (document for document in resources() if document["kind"] == kind)
    return found


def pod_spec(kind: str) -> dict[str, Any]:
    return resource(kind)["spec"]["template"]["spec"]


def container(kind: str) -> dict[str, Any]:
    (only,) = pod_spec(kind)["containers"]
    return only


def config() -> dict[str, str]:
    return resource("ConfigMap")["data"]


def secret() -> dict[str, str]:
    return resource("Secret")["stringData"]


def mebibytes(quantity: str) -> float:
    """A Kubernetes memory quantity (512Mi, 1Gi, 500M, 1048576) in MiB."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9, "": 1}
    match = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi|k|M|G|)", quantity)
    assert match, f"not a memory quantity: {quantity!r}"
    return float(match[1]) * units[match[2]] / 2**20


def container_port(gateway: dict[str, Any], port: int | str) -> int:
    """The container port a probe or the Service names, by number or by name."""
    (found,) = (
        declared["containerPort"]
        for declared in gateway["ports"]
        if port in (declared["containerPort"], declared.get("name"))
    )
    return found


def gateway_reads() -> set[str]:
    """Every variable name the gateway reads: the first argument of each reader call."""
    names = set()
    for source in SETTINGS_SOURCES:
        for node in ast.walk(ast.parse(source.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in READERS
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                names.add(node.args[0].value)
    return names


def start_settings(environment: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Load the settings and gunicorn.conf.py as `portier serve` does, with only this
    environment: each refuses a bad value with ImproperlyConfigured."""
    # The metrics directory in the test's: gunicorn.conf.py would otherwise make one in /tmp.
    env = {"PATH": os.environ["PATH"], "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), **environment}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import runpy, sys; import gateway_site.settings; runpy.run_path(sys.argv[1])",
            str(ROOT / "gateway_site" / "gunicorn.conf.py"),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda path: path.name)
def test_every_manifest_is_valid_for_the_kubernetes_api(path: Path, version: str) -> None:
    documents = [document for document in yaml.safe_load_all(path.read_text()) if document]
    assert documents
    for document in documents:
        # Raises on a schema violation, and on a kind or apiVersion the API does not have.
        kubernetes_validate.validate(document, version, strict=True)


def test_the_kustomization_lists_every_manifest_in_the_folder() -> None:
    kustomization = yaml.safe_load((MANIFESTS / KUSTOMIZATION).read_text())
    assert sorted(kustomization["resources"]) == [path.name for path in manifest_files()]


def test_liveness_asks_live_and_readiness_asks_ready() -> None:
    gateway = container("Deployment")
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    # Startup waits for the process only: a missing configuration is readiness's business,
    # and a restart would not bring it.
    assert gateway["startupProbe"]["httpGet"]["path"] == "/health/live"


def test_every_probe_sends_a_host_the_gateway_allows_to_the_port_it_serves() -> None:
    gateway = container("Deployment")
    allowed = config()["ALLOWED_HOSTS"].split(",")
    for name in PROBES:
        request = gateway[name]["httpGet"]
        headers = {header["name"].lower(): header["value"] for header in request["httpHeaders"]}
        # Without one, kubelet sends the pod's IP, which Django refuses with 400.
        domain, _ = split_domain_port(headers["host"])
        assert validate_host(domain, allowed), f"{name}: Host {headers['host']} not allowed"
        assert container_port(gateway, request["port"]) == 8000, name


def test_kubernetes_kills_a_pod_only_after_its_prestop_pause_and_its_drain() -> None:
    pause = container("Deployment")["lifecycle"]["preStop"]["sleep"]["seconds"]
    graceful_timeout = int(config()["PORTIER_GRACEFUL_TIMEOUT"])
    # The pause lets the endpoints' removal reach every proxy before the gateway stops
    # accepting; the grace period counts from before the pause.
    assert pause > 0
    assert pod_spec("Deployment")["terminationGracePeriodSeconds"] > pause + graceful_timeout


def test_liveness_gives_up_later_than_gunicorns_own_worker_heartbeat() -> None:
    probe = container("Deployment")["livenessProbe"]
    graceful_timeout = int(config()["PORTIER_GRACEFUL_TIMEOUT"])
    # gunicorn.conf.py's default: a stuck worker is replaced by gunicorn after this long.
    worker_timeout = int(config().get("PORTIER_WORKER_TIMEOUT") or max(30, graceful_timeout + 5))
    window = probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
    assert window > worker_timeout


def test_the_memory_request_holds_the_master_and_every_worker() -> None:
    # Set, not left to gunicorn's default (a worker per CPU of the node): the pod's memory
    # is sized per worker.
    workers = int(config()["WEB_CONCURRENCY"])
    resources = container("Deployment")["resources"]
    request = mebibytes(resources["requests"]["memory"])
    assert request >= MASTER_RSS_MIB + workers * WORKER_RSS_MIB
    assert mebibytes(resources["limits"]["memory"]) >= request


def test_every_variable_set_is_a_setting_the_gateway_reads() -> None:
    reads = gateway_reads()
    assert {"SECRET_KEY", "REDIS_URL", "WEB_CONCURRENCY", "PORTIER_GRACEFUL_TIMEOUT"} <= reads
    names = {*config(), *secret()}
    for kind in ("Deployment", "Job"):
        variables = container(kind).get("env", [])
        # One only there to be expanded into another (deployment.yaml's $(POD_IP) recipe for
        # scraping) is not a setting.
        expanded = {
            name
            for variable in variables
            for name in re.findall(r"\$\((\w+)\)", variable.get("value", ""))
        }
        names |= {variable["name"] for variable in variables} - expanded
    assert names - reads == set()


def test_the_gateway_accepts_these_settings_once_the_secret_is_replaced(tmp_path: Path) -> None:
    environment = config() | secret() | {"SECRET_KEY": secrets.token_urlsafe(48)}
    started = start_settings(environment, tmp_path)
    assert started.returncode == 0, started.stderr


def test_a_forgotten_secret_key_placeholder_stops_the_gateway(tmp_path: Path) -> None:
    started = start_settings(config() | secret(), tmp_path)
    assert started.returncode != 0
    assert "needs SECRET_KEY set to 32+ random characters" in started.stderr


def test_the_service_sends_port_80_to_the_port_the_gateway_serves() -> None:
    (port,) = resource("Service")["spec"]["ports"]
    assert port["port"] == 80
    # The port `portier serve` binds (PORTIER_BIND, 0.0.0.0:8000 unless the ConfigMap says).
    _, bound = config().get("PORTIER_BIND", "0.0.0.0:8000").rsplit(":", 1)
    assert container_port(container("Deployment"), port["targetPort"]) == int(bound)


def test_the_service_selects_the_gateways_pods_and_not_the_migrations() -> None:
    gateway = resource("Deployment")
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    migration = resource("Job")["spec"]["template"]["metadata"]["labels"]
    assert gateway["spec"]["selector"]["matchLabels"].items() <= labels.items()
    selector = resource("Service")["spec"]["selector"]
    assert selector.items() <= labels.items()
    assert not selector.items() <= migration.items()


def test_the_budget_and_the_autoscaler_aim_at_the_gateway() -> None:
    gateway = resource("Deployment")
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    migration = resource("Job")["spec"]["template"]["metadata"]["labels"]
    budget = resource("PodDisruptionBudget")["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert not budget["selector"]["matchLabels"].items() <= migration.items()
    autoscaler = resource("HorizontalPodAutoscaler")["spec"]
    assert autoscaler["scaleTargetRef"] == {
        "apiVersion": gateway["apiVersion"],
        "kind": "Deployment",
        "name": gateway["metadata"]["name"],
    }


def test_the_autoscaler_owns_the_replica_count_and_a_drain_can_always_evict() -> None:
    # A count in the Deployment would be re-applied by every `kubectl apply`, scaling down
    # what the autoscaler had scaled up.
    assert "replicas" not in resource("Deployment")["spec"]
    minimum = resource("HorizontalPodAutoscaler")["spec"]["minReplicas"]
    assert minimum >= 2
    assert resource("PodDisruptionBudget")["spec"]["minAvailable"] < minimum


def test_the_migration_job_runs_migrate_with_the_gateways_image_and_settings() -> None:
    gateway, migration = container("Deployment"), container("Job")
    assert gateway["command"] == ["portier", "serve"]
    assert migration["command"] == ["portier", "migrate", "--noinput"]
    assert migration["image"] == gateway["image"]
    settings = [
        {"configMapRef": {"name": resource("ConfigMap")["metadata"]["name"]}},
        {"secretRef": {"name": resource("Secret")["metadata"]["name"]}},
    ]
    assert gateway["envFrom"] == settings
    assert migration["envFrom"] == settings


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_it_runs_unprivileged_on_a_read_only_filesystem(kind: str) -> None:
    pod, only = pod_spec(kind), container(kind)
    # By number: the image's `USER portier` is a name, which runAsNonRoot cannot verify.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    context = only["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"]["drop"] == ["ALL"]
    # gunicorn.conf.py's Prometheus directory (tempfile.mkdtemp) needs a writable /tmp.
    (tmp,) = (mount["name"] for mount in only["volumeMounts"] if mount["mountPath"] == "/tmp")
    (volume,) = (volume for volume in pod["volumes"] if volume["name"] == tmp)
    assert "emptyDir" in volume
