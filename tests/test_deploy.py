"""deploy/ checked as far as a machine without a Docker engine or a Kubernetes cluster allows: the YAML parses,
probes point at real routes with the right meaning, the image runs the real console script as a non-root user,
every AGENTCAPS_* setting is one the service reads, and Redis is configured to keep every counter."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from litestar.testing import TestClient

from app.api.app import create_app
from app.config import Settings
from app.errors import ConfigError
from app.store.base import Store
from app.store.memory import MemoryStore
from app.store.redis_cluster import WaitPolicy, parse_cluster_url
from app.token.keys import KeyRing, new_key_entry
from tests.processes import start_service

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = dockerfile()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def k8s() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def one(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in k8s() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def routes() -> dict[str, set[str]]:
    app = create_app(Settings(), store=MemoryStore())
    return {r.path: set(getattr(r, "methods", ())) for r in app.routes}


def settings_read_by_the_service() -> set[str]:
    names = set()
    for path in (ROOT / "app").rglob("*.py"):
        names |= set(re.findall(r"\"(AGENTCAPS_[A-Z_]+)\"", path.read_text()))
    return names


# -- Dockerfile ----------------------------------------------------------------------------------------------------


def test_the_image_runs_the_console_script_from_pyproject_as_a_non_root_user() -> None:
    steps = final_stage()
    assert re.fullmatch(r"python:3\.1[1-9]-slim", dict(steps)["FROM"])
    entrypoint = json.loads(dict(steps)["ENTRYPOINT"])
    assert entrypoint == ["agentcaps"] and "agentcaps" in PYPROJECT["project"]["scripts"]
    assert json.loads(dict(steps)["CMD"])[0] == "serve"
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert [w for w, _ in steps].index("USER") < [w for w, _ in steps].index("ENTRYPOINT")
    assert dict(steps)["EXPOSE"] == str(Settings().port)


def test_the_image_installs_the_server_extra_from_the_wheels_it_built() -> None:
    runs = [rest for word, rest in dockerfile() if word == "RUN"]
    assert any(re.search(r"pip wheel .*--wheel-dir /wheels \"\.\[server\]\"", r) for r in runs), runs
    assert any(re.search(r"pip install .*--no-index --find-links /wheels \"agentcaps\[server\]\"", r) for r in runs), (
        runs
    )
    assert "server" in PYPROJECT["project"]["optional-dependencies"]


def test_the_console_script_names_a_real_function() -> None:
    module, _, function = PYPROJECT["project"]["scripts"]["agentcaps"].partition(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_the_image_copies_everything_the_package_needs() -> None:
    copied = {
        part for word, rest in dockerfile() if word == "COPY" and "--from" not in rest for part in rest.split()[:-1]
    }
    for package in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert package.rstrip("*") in copied, package
    assert {"pyproject.toml", PYPROJECT["project"]["readme"]} <= copied
    for path in copied:
        assert (ROOT / path).exists(), path


def sent_to_docker(path: str) -> bool:
    """Whether `docker build .` sends this path, by .dockerignore's rules: the last matching pattern decides."""
    sent = True
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/").removeprefix("**/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes) or any(
            line.lstrip("!").startswith("**/") and fnmatch.fnmatchcase(part, pattern) for part in parts
        ):
            sent = keep
    return sent


def test_the_build_context_holds_what_the_image_copies_and_no_venv_or_keys() -> None:
    copied = [
        part for word, rest in dockerfile() if word == "COPY" and "--from" not in rest for part in rest.split()[:-1]
    ]
    for path in copied:
        assert sent_to_docker(path), path
    for path in ["app/authority.py", "caveats/budget.py"]:
        assert sent_to_docker(path), path
    for path in [
        ".venv/bin/python",
        ".agentcaps/admin_key",
        ".git/config",
        "tests/conftest.py",
        "app/__pycache__/cli.cpython-311.pyc",
    ]:
        assert not sent_to_docker(path), path


def test_every_placeholder_in_the_manifests_is_explained_in_the_k8s_readme() -> None:
    readme = (DEPLOY / "k8s" / "README.md").read_text()
    placeholders = [
        (key, value)
        for doc in k8s()
        for section in ("data", "stringData")
        for key, value in (doc.get(section) or {}).items()
        if "REPLACE" in str(value)
    ]
    assert {key for key, _ in placeholders} >= {"AGENTCAPS_MASTER_KEYS", "AGENTCAPS_ADMIN_KEYS", "AGENTCAPS_LOCATION"}
    for key, _ in placeholders:
        assert f"`{key}`" in readme, key


def test_the_healthcheck_passes_on_a_ready_service_and_fails_on_one_that_is_not(tmp_path: Path) -> None:
    """Run the HEALTHCHECK command itself against real `serve` processes: ready (memory://) and not (no Redis)."""
    check = json.loads(re.sub(r"^(--\S+\s+)*CMD\s+", "", dict(final_stage())["HEALTHCHECK"]))
    assert "/readyz" in " ".join(check)
    ready = start_service("memory://", tmp_path)
    unready = start_service("redis://127.0.0.1:1/0", tmp_path)
    try:
        for service, code in ((ready, 0), (unready, 1)):
            port = service.url.rsplit(":", 1)[1]
            env = {"AGENTCAPS_PORT": port, "PATH": "/usr/bin:/bin"}
            result = subprocess.run([sys.executable, *check[1:]], env=env, capture_output=True, timeout=10)
            assert (result.returncode != 0) == bool(code), result.stderr
    finally:
        for service in (ready, unready):
            service.process.terminate()
            service.process.wait(10)


# -- compose -------------------------------------------------------------------------------------------------------


def redis_conf(text: str) -> dict[str, str]:
    conf = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            conf[key] = value
    return conf


def test_compose_runs_the_service_on_a_redis_that_fsyncs_every_write_and_never_evicts() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    redis, service = compose["services"]["redis"], compose["services"]["agentcaps"]
    conf = redis_conf((DEPLOY / "redis.conf").read_text())
    assert conf["appendonly"] == "yes" and conf["appendfsync"] == "always"
    assert conf["maxmemory-policy"] == "noeviction"
    assert any(v.startswith("./redis.conf:") for v in redis["volumes"]) and "redis.conf" in " ".join(redis["command"])
    assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert service["command"][0] == "serve"
    store = service["environment"]["AGENTCAPS_STORE"]
    assert re.fullmatch(r"redis://redis:6379/\d+", store)  # the redis service by its compose name
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert set(service["environment"]) <= settings_read_by_the_service()


# -- Kubernetes ----------------------------------------------------------------------------------------------------


def test_probes_point_at_routes_of_the_app() -> None:
    deployment = one("Deployment", "agentcaps")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    app_routes = routes()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path and "GET" in app_routes[get["path"]], probe
        assert get["port"] in ports
    assert ports[container["readinessProbe"]["httpGet"]["port"]] == int(
        next(e["value"] for e in container["env"] if e["name"] == "AGENTCAPS_PORT")
    )


class _DownStore(MemoryStore):
    async def ready(self) -> str | None:
        return "counter store unreachable: ConnectionError"


def test_readiness_follows_the_store_and_liveness_does_not() -> None:
    """So a Redis outage takes pods out of the load balancer but never restarts them."""
    stores: list[Store] = [MemoryStore(), _DownStore()]
    answers = []
    for store in stores:
        with TestClient(create_app(Settings(), store=store)) as client:
            answers.append((client.get("/readyz").status_code, client.get("/healthz").status_code))
    assert answers == [(200, 200), (503, 200)]


def test_the_deployment_runs_the_image_entrypoint_non_root_with_keys_from_the_secret() -> None:
    deployment = one("Deployment", "agentcaps")
    spec = deployment["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert "command" not in container  # keep the image's ENTRYPOINT: agentcaps
    assert container["args"][0] == "serve"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    refs = {next(iter(ref)): ref[next(iter(ref))]["name"] for ref in container["envFrom"]}
    secret = one("Secret", refs["secretRef"])
    assert set(secret["stringData"]) == {"AGENTCAPS_MASTER_KEYS", "AGENTCAPS_ADMIN_KEYS"}
    config = one("ConfigMap", refs["configMapRef"])
    names = set(secret["stringData"]) | set(config["data"]) | {e["name"] for e in container["env"]}
    assert names <= settings_read_by_the_service()
    service = one("Service", "agentcaps")
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container["ports"]}


def test_the_store_is_the_reference_redis_cluster_configured_to_keep_every_counter() -> None:
    config = one("ConfigMap", "agentcaps-config")["data"]
    nodes, _, _ = parse_cluster_url(config["AGENTCAPS_STORE"])
    WaitPolicy.parse(config.get("AGENTCAPS_REDIS_WAIT", ""))
    statefulset = one("StatefulSet", "redis-cluster")
    headless = one("Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    name, service, replicas = (
        statefulset["metadata"]["name"],
        headless["metadata"]["name"],
        statefulset["spec"]["replicas"],
    )
    assert replicas == 6  # 3 masters, each with a replica
    for host, port in nodes:  # stable pod DNS names of the StatefulSet
        m = re.fullmatch(rf"{name}-(\d+)\.{service}", host)
        assert m and int(m.group(1)) < replicas and port == 6379, host
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    volume = next(v for v in statefulset["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
    conf = redis_conf(one("ConfigMap", volume["configMap"]["name"])["data"]["redis.conf"])
    assert conf["cluster-enabled"] == "yes" and conf["appendonly"] == "yes"
    assert conf["appendfsync"] in ("always", "everysec") and conf["maxmemory-policy"] == "noeviction"
    assert conf["dir"] == "/data" and any(m["mountPath"] == "/data" for m in container["volumeMounts"])
    create = one("Job", "redis-cluster-create")["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    assert "--cluster-replicas 1" in create and shlex.split(create)  # forms 3 masters + 3 replicas


def test_the_secrets_placeholders_are_refused_at_start(tmp_path: Path) -> None:
    """A Secret applied without replacing its values must stop the pod, not run with a guessable admin key."""
    placeholders = one("Secret", "agentcaps-keys")["stringData"]
    master = KeyRing(new_key_entry()).serialize()
    for env, named in (
        ({"AGENTCAPS_ADMIN_KEYS": placeholders["AGENTCAPS_ADMIN_KEYS"], "AGENTCAPS_MASTER_KEYS": master}, "ADMIN"),
        (placeholders, "MASTER"),
    ):
        with pytest.raises(ConfigError, match=f"^AGENTCAPS_{named}_KEYS"):
            Settings.from_env({"AGENTCAPS_DATA_DIR": str(tmp_path), **env})
