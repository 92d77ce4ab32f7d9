"""Offline checks of the Kubernetes manifests (deploy/k8s): kustomize base plus the production overlay.

The overlay is rendered with `kubectl kustomize` when kubectl is installed, and always with the small
renderer below (the subset of kustomize these files use), and the two must agree. Every rendered object
is validated against the Kubernetes 1.37 OpenAPI schemas by kubernetes-validate (strict: unknown fields
fail). Then the contract with the code: each container's environment loads with the real settings
classes, and the probes, ports, grace period and secret files it names are the ones those settings use.
"""

from __future__ import annotations

import copy
import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from servicekit import settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAY = K8S / "overlays" / "production"
PACKAGES = {
    "orchestrator": "orchestrator",
    "order": "order_service",
    "payment": "payment_service",
    "inventory": "inventory_service",
}
PARTICIPANTS = ("order", "payment", "inventory")
CLUSTER_SCOPED = {"Namespace"}
FAKE_DATABASE_URL = "postgresql://sagaline:not-a-secret@db.example:5432/sagaline"


def run(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    command = [str(a) for a in args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603


def venv_tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in the virtualenv (a dev dependency: run `make sync`)")
    return str(path)


# ------------------------------------------------------------------------------ a small kustomize
def json_patch(document: dict[str, Any], operations: list[dict[str, Any]]) -> None:
    """Apply RFC 6902 `add` and `replace` operations (all the overlay uses) in place."""
    for operation in operations:
        *parents, leaf = [part.replace("~1", "/").replace("~0", "~") for part in operation["path"].split("/")[1:]]
        node: Any = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        assert operation["op"] in ("add", "replace"), f"unsupported patch operation {operation['op']}"
        if isinstance(node, list):
            node[int(leaf)] = operation["value"]
        else:
            assert operation["op"] == "add" or leaf in node, f"replace of a missing {operation['path']}"
            node[leaf] = operation["value"]


def set_images(document: dict[str, Any], images: list[dict[str, str]]) -> None:
    pod = document.get("spec", {}).get("template", {}).get("spec", {})
    for container in pod.get("initContainers", []) + pod.get("containers", []):
        for image in images:
            if container["image"].split(":")[0] == image["name"]:
                name = image.get("newName", image["name"])
                container["image"] = f"{name}:{image['newTag']}" if "newTag" in image else name


def render_python(directory: Path) -> list[dict[str, Any]]:
    """Render a kustomization: resources, namespace, images, replicas and JSON 6902 patches."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "resources", "namespace", "images", "replicas", "patches"}
    assert set(spec) <= known, f"this renderer does not know {set(spec) - known}: extend it or kubectl must render"
    documents: list[dict[str, Any]] = []
    for resource in spec.get("resources", []):
        path = directory / resource
        if path.is_dir():
            documents += render_python(path)
        else:
            documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for document in documents:
        if "namespace" in spec and document["kind"] not in CLUSTER_SCOPED:
            document["metadata"]["namespace"] = spec["namespace"]
        set_images(document, spec.get("images", []))
        for replicas in spec.get("replicas", []):
            if document["kind"] == "Deployment" and document["metadata"]["name"] == replicas["name"]:
                document["spec"]["replicas"] = replicas["count"]
        for patch in spec.get("patches", []):
            target = patch["target"]
            if document["kind"] == target["kind"] and document["metadata"]["name"] == target["name"]:
                text = patch["patch"] if "patch" in patch else (directory / patch["path"]).read_text()
                json_patch(document, yaml.safe_load(text))
    return documents


def by_identity(documents: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in documents}


@pytest.fixture(scope="module")
def rendered() -> dict[tuple[str, str], dict[str, Any]]:
    documents = by_identity(render_python(OVERLAY))
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        result = run(kubectl, "kustomize", OVERLAY)
        assert result.returncode == 0, result.stderr
        assert by_identity(list(yaml.safe_load_all(result.stdout))) == documents, "the two renderers disagree"
    return documents


def deployments(rendered: dict[tuple[str, str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: d for (kind, name), d in rendered.items() if kind == "Deployment"}


def main_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The environment, with each secret reference replaced by a stand-in value of the right shape."""
    env = {}
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = str(variable["value"])
        else:
            assert variable["valueFrom"]["secretKeyRef"]["name"].endswith("-db"), variable
            env[variable["name"]] = FAKE_DATABASE_URL
    return env


def load_settings(process: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> Any:
    for key in list(os.environ):
        if key.startswith(("SAGALINE_", "OTEL_", "PG")):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config: Any = importlib.import_module(f"{PACKAGES[process]}.config")
    return settings.load(config.Settings, **overrides)


def mounted_secret_files(deployment: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """Directory inside the container -> name of the one Secret projected there."""
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"].get("volumes", [])}
    found = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "projected" in volume:
            (source,) = volume["projected"]["sources"]
            found[mount["mountPath"]] = source["secret"]["name"]
            assert volume["projected"]["defaultMode"] & 0o007 == 0, "secret files are not world-readable"
    return found


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


# ----------------------------------------------------------------------------------- schema validation
def test_the_overlay_renders_every_object(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    kinds = sorted(kind for kind, _ in rendered)
    assert kinds.count("Deployment") == 4
    assert kinds.count("Service") == 4
    assert kinds.count("PodDisruptionBudget") == 4
    assert ("Namespace", "sagaline") in rendered
    assert all(d["metadata"].get("namespace") == "sagaline" for (k, _), d in rendered.items() if k != "Namespace")
    assert "Secret" not in kinds, "secrets are created out of band and only referenced"


def test_rendered_manifests_pass_kubernetes_validate(
    rendered: dict[tuple[str, str], dict[str, Any]], tmp_path: Path
) -> None:
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(list(rendered.values())))
    result = run(venv_tool("kubernetes-validate"), "--strict", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") == len(rendered), result.stdout


def break_replicas(deployment: dict[str, Any]) -> None:
    deployment["spec"]["replicas"] = "three"


def misspell_a_probe_field(deployment: dict[str, Any]) -> None:
    main_container(deployment)["readinessProbe"]["httpGet"]["pathh"] = "/readyz"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [(break_replicas, "'three' is not of type 'integer'"), (misspell_a_probe_field, "'pathh' was unexpected")],
)
def test_kubernetes_validate_rejects_a_broken_deployment(
    rendered: dict[tuple[str, str], dict[str, Any]], tmp_path: Path, mutate: Any, message: str
) -> None:
    broken = copy.deepcopy(rendered[("Deployment", "orchestrator")])
    mutate(broken)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = run(venv_tool("kubernetes-validate"), "--strict", path)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


# -------------------------------------------------------------------------------- scale and disruption
def test_n_orchestrators_behind_one_service(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    orchestrator = rendered[("Deployment", "orchestrator")]
    assert orchestrator["spec"]["replicas"] >= 2
    assert orchestrator["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    service = rendered[("Service", "orchestrator")]
    labels = orchestrator["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port_number(main_container(orchestrator), port["targetPort"]) == 8080


def test_every_deployment_has_a_disruption_budget_that_leaves_one_pod(
    rendered: dict[tuple[str, str], dict[str, Any]],
) -> None:
    for name, deployment in deployments(rendered).items():
        budget = rendered[("PodDisruptionBudget", name)]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert budget["spec"]["maxUnavailable"] < deployment["spec"]["replicas"], name


def test_every_container_requests_cpu_and_memory_and_caps_memory(
    rendered: dict[tuple[str, str], dict[str, Any]],
) -> None:
    for name, deployment in deployments(rendered).items():
        pod = deployment["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), (name, container["name"])
            assert "memory" in resources["limits"], (name, container["name"])
            # A CPU limit throttles the lease heartbeat (every 1.3 s) into early handovers.
            assert "cpu" not in resources["limits"], (name, container["name"])


# ------------------------------------------------------------------------------- the code's contract
def test_probes_are_the_real_endpoints_on_the_ports_the_settings_listen_on(
    rendered: dict[tuple[str, str], dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected_ports = {"orchestrator": 8080, "order": 9101, "payment": 9102, "inventory": 9103}
    for name, deployment in deployments(rendered).items():
        container = main_container(deployment)
        assert container["args"] == ["sagaline", "serve", name]
        cfg = load_settings(name, container_env(container), monkeypatch)
        assert cfg.http_port == expected_ports[name]
        readiness, liveness = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
        assert readiness["path"] == "/readyz"
        assert liveness["path"] == "/livez"
        assert port_number(container, readiness["port"]) == port_number(container, liveness["port"]) == cfg.http_port


def test_orchestrators_call_the_participant_services_on_their_grpc_ports(
    rendered: dict[tuple[str, str], dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    orchestrator = load_settings(
        "orchestrator", container_env(main_container(rendered[("Deployment", "orchestrator")])), monkeypatch
    )
    for participant in PARTICIPANTS:
        container = main_container(rendered[("Deployment", participant)])
        cfg = load_settings(participant, container_env(container), monkeypatch)
        host, port = getattr(orchestrator.participants, participant).split(":")
        service = rendered[("Service", host)]
        (grpc,) = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
        assert int(port) == grpc["port"]
        assert port_number(container, grpc["targetPort"]) == cfg.grpc_port


def test_secrets_are_referenced_never_written(
    rendered: dict[tuple[str, str], dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, deployment in deployments(rendered).items():
        pod = deployment["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            for variable in container.get("env", []):
                value = str(variable.get("value", ""))
                assert not re.search(r"postgres(ql)?://|password|BEGIN ", value, re.IGNORECASE), (name, variable)
                if variable["name"].endswith("DATABASE__URL"):
                    assert variable["valueFrom"]["secretKeyRef"] == {"name": f"sagaline-{name}-db", "key": "url"}
        container = main_container(deployment)
        cfg = load_settings(name, container_env(container), monkeypatch)
        secrets = mounted_secret_files(deployment, container)
        tls_files = [cfg.tls.cert_file, cfg.tls.key_file, cfg.tls.ca_file]
        assert all(tls_files), f"{name}: gRPC must be mutual TLS"
        for path in tls_files:
            assert secrets.get(str(path.parent)) == f"sagaline-{name}-tls", (name, path)
        if name == "orchestrator":
            assert cfg.auth == "on"
            assert {key.role for key in cfg.api_keys} == {"client", "admin"}
            for key in cfg.api_keys:
                assert key.sha256 is None
                assert secrets.get(str(key.key_file.parent)) == "sagaline-api-keys"
            assert cfg.tls.server_name == "{service}", "the certificate names the service, not the DNS name"


def test_termination_grace_outlasts_the_drain(
    rendered: dict[tuple[str, str], dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, deployment in deployments(rendered).items():
        container = main_container(deployment)
        cfg = load_settings(name, container_env(container), monkeypatch)
        pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        drain = cfg.shutdown_grace.total_seconds() + int(pre_stop[1])
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= drain + 10, f"{name}: {grace}s leaves under 10 s after the {drain:.0f}s drain"


def test_pods_run_as_the_image_user_and_not_as_root(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    uid = int(re.search(r"useradd [^\n]*--uid (\d+)", (ROOT / "Dockerfile").read_text()).group(1))  # type: ignore[union-attr]
    for name, deployment in deployments(rendered).items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid, name
        for container in pod.get("initContainers", []) + pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_migrations_run_before_each_service_starts(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    for name, deployment in deployments(rendered).items():
        (migrate,) = deployment["spec"]["template"]["spec"]["initContainers"]
        assert migrate["args"] == ["python", "/app/deploy/docker/migrate.py", name]
        assert migrate["image"] == main_container(deployment)["image"]
        assert migrate["image"].startswith(f"ghcr.io/your-org/sagaline-{name}:")
