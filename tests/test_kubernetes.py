"""``deploy/kubernetes``: valid manifests that match what the bridge serves and reads.

Every manifest is validated against the Kubernetes schemas that ``kubernetes-validate`` ships
(strict: an unknown field is an error), offline. Then the manifests are held against the bridge
itself: the probes' paths are answered by a running bridge, the container port is the port the
ConfigMap makes it serve, every environment name is one the bridge reads, the users file is where
MTANGO_USERS_FILE says, the user is the Dockerfile's, and the grace period covers the shutdown.
Each check is a function that lists problems; the tests run it on the manifests (no problem) and
on a broken copy (the problem is found), so that no check passes by looking at nothing.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kv

from mtango.config import EPICS_ENVIRONMENT, Config, from_environment, load_config
from tests.bridge import ROOT

DEPLOY = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes the manifests are meant for, and the newest the package knows.
VERSIONS = ("1.29.0", kv.latest_version())
KUSTOMIZATION = "kustomization.yaml"
NOT_APPLIED = {"secret-users.example.yaml"}  # an example; the real Secret is made apart


def manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.glob("*.yaml") if p.name != KUSTOMIZATION)


def documents() -> list[dict[str, Any]]:
    found = []
    for path in manifest_files():
        found += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return found


def one(kind: str, name: str | None = None, docs: list[dict[str, Any]] | None = None
        ) -> dict[str, Any]:
    matches = [d for d in (documents() if docs is None else docs) if d["kind"] == kind
               and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"{len(matches)} {kind} {name or ''}"
    return matches[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = one("Deployment", docs=docs)["spec"]["template"]["spec"]["containers"]
    return found


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one("Deployment", docs=docs)["spec"]["template"]["spec"]


def config_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The environment the pod gets: the ConfigMap(s) of envFrom, then env."""
    env: dict[str, str] = {}
    spec = container(docs)
    for source in spec.get("envFrom", []):
        env.update(one("ConfigMap", source["configMapRef"]["name"], docs)["data"])
    for item in spec.get("env", []):
        env[item["name"]] = item.get("value", "")
    return env


def broken(change: Any) -> list[dict[str, Any]]:
    """A copy of the manifests with ``change(docs)`` applied."""
    docs = copy.deepcopy(documents())
    change(docs)
    return docs


# -- the schemas ---------------------------------------------------------------------------------


def schema_problems(doc: dict[str, Any]) -> list[str]:
    problems = []
    for version in VERSIONS:
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']} ({version}): "
                            f"{exc.message} at {list(exc.path)}")
    return problems


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_manifest_is_valid_against_the_kubernetes_schemas(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        assert not schema_problems(doc)


def test_schema_validation_is_strict() -> None:
    """An unknown field, a misplaced one and a wrong type are each refused."""
    deployment = one("Deployment")
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    assert schema_problems(typo)
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "three"
    assert schema_problems(wrong_type)
    port = copy.deepcopy(one("Service", "mtango-bridge"))
    port["spec"]["ports"][0]["targetPort"] = {"name": "http"}
    assert schema_problems(port)


def kustomization_problems(resources: list[str]) -> list[str]:
    applied = {p.name for p in manifest_files()} - NOT_APPLIED
    problems = [f"{name} is not applied" for name in sorted(applied - set(resources))]
    problems += [f"{name} does not exist" for name in resources if not (DEPLOY / name).is_file()]
    problems += [f"{name} is an example" for name in resources if name in NOT_APPLIED]
    return problems


def test_kustomization_applies_every_manifest() -> None:
    """``kubectl apply -k deploy/kubernetes`` applies every manifest but the example Secret."""
    kustomization = yaml.safe_load((DEPLOY / KUSTOMIZATION).read_text())
    assert kustomization["kind"] == "Kustomization"
    resources = kustomization["resources"]
    assert not kustomization_problems(resources)
    assert kustomization_problems(resources[1:])
    assert kustomization_problems([*resources, "secret-users.example.yaml"])


# -- what the bridge serves ----------------------------------------------------------------------


def named_port(docs: list[dict[str, Any]], port: Any) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container(docs)["ports"] if p["name"] == port]
    return int(number)


def probes(docs: list[dict[str, Any]]) -> dict[str, tuple[str, int]]:
    spec = container(docs)
    return {kind: (spec[kind]["httpGet"]["path"], named_port(docs, spec[kind]["httpGet"]["port"]))
            for kind in ("startupProbe", "livenessProbe", "readinessProbe")}


def test_probes_are_what_the_bridge_answers(bridge) -> None:
    """Liveness on /health/live, readiness on /health/ready, both on the served port; a
    running bridge answers them (200, or 503 for a readiness that fails), not 404."""
    docs = documents()
    found = probes(docs)
    assert found["livenessProbe"][0] == "/health/live"
    assert found["readinessProbe"][0] == "/health/ready"
    port = served_port(docs)
    for path, probe_port in found.values():
        assert probe_port == port
        assert bridge.get(path).status in (200, 503), path
    assert bridge.get("/health/readiness").status == 404  # a wrong path would be noticed


def served_port(docs: list[dict[str, Any]]) -> int:
    """The port ``main.py`` listens on with the pod's environment (MTANGO_PORT)."""
    return load_config(env=config_env(docs)).port


def port_problems(docs: list[dict[str, Any]]) -> list[str]:
    port = served_port(docs)
    problems = []
    ports = {p["name"]: p["containerPort"] for p in container(docs)["ports"]}
    if ports.get("http") != port:
        problems.append(f"containerPort {ports.get('http')} is not the served port {port}")
    for service in (d for d in docs if d["kind"] == "Service"):
        for item in service["spec"]["ports"]:
            if named_port(docs, item["targetPort"]) != port:
                problems.append(f"Service {service['metadata']['name']} targets "
                                f"{item['targetPort']}")
    annotations = one("Deployment", docs=docs)["spec"]["template"]["metadata"]["annotations"]
    if int(annotations["prometheus.io/port"]) != port:
        problems.append("Prometheus scrapes another port")
    return problems


def test_ports_are_the_port_the_bridge_serves() -> None:
    assert served_port(documents()) == 8000
    assert not port_problems(documents())

    def other_port(docs: list[dict[str, Any]]) -> None:
        one("ConfigMap", "mtango-bridge", docs)["data"]["MTANGO_PORT"] = "8080"

    assert port_problems(broken(other_port))


def env_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Names in the pod's environment that the bridge does not read (a typo is silently
    ignored by the bridge, so it must be caught here), and values it refuses."""
    problems = [f"{name} is not read by the bridge" for name in config_env(docs)
                if not from_environment({name: "x"})]
    try:
        load_config(env=config_env(docs))
    except ValueError as exc:
        problems.append(f"the bridge refuses the configuration: {exc}")
    return problems


def test_environment_names_are_read_by_the_bridge() -> None:
    env = config_env(documents())
    assert {"TANGO_HOST", "MTANGO_WORKERS", "MTANGO_USERS_FILE", "EPICS_CA_ADDR_LIST"} <= set(env)
    assert not env_problems(documents())
    assert from_environment({"MTANGO_WORKERS": "3"}) == {"workers": "3"}
    assert set(EPICS_ENVIRONMENT) <= {n for n in EPICS_ENVIRONMENT if from_environment({n: "x"})}

    def typo(docs: list[dict[str, Any]]) -> None:
        one("ConfigMap", "mtango-bridge", docs)["data"]["MTANGO_WORKER"] = "2"

    assert env_problems(broken(typo)) == ["MTANGO_WORKER is not read by the bridge"]

    def bad_value(docs: list[dict[str, Any]]) -> None:
        one("ConfigMap", "mtango-bridge", docs)["data"]["MTANGO_WRITES"] = "yes"

    assert env_problems(broken(bad_value))


def service_link_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Kubernetes gives pods ``<SERVICE>_PORT``, ``<SERVICE>_SERVICE_HOST``... for each Service
    of the namespace unless enableServiceLinks is false; none of ours may be a setting."""
    problems = []
    if pod_spec(docs).get("enableServiceLinks", True):
        problems.append("service links are on")
    for service in (d for d in docs if d["kind"] == "Service"):
        prefix = service["metadata"]["name"].upper().replace("-", "_")
        injected = [f"{prefix}_SERVICE_HOST", f"{prefix}_SERVICE_PORT", f"{prefix}_PORT"]
        injected += [f"{prefix}_SERVICE_PORT_{p['name'].upper()}"
                     for p in service["spec"]["ports"]]
        problems += [f"{name} would be read" for name in injected if from_environment({name: "x"})]
    return problems


def test_service_variables_cannot_configure_the_bridge() -> None:
    assert not service_link_problems(documents())

    def named_mtango(docs: list[dict[str, Any]]) -> None:
        one("Service", "mtango-bridge", docs)["metadata"]["name"] = "mtango"
        pod_spec(docs)["enableServiceLinks"] = True

    assert set(service_link_problems(broken(named_mtango))) == {
        "service links are on", "MTANGO_PORT would be read"}


def users_file_problems(docs: list[dict[str, Any]]) -> list[str]:
    wanted = Path(config_env(docs)["MTANGO_USERS_FILE"])
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    for mount in container(docs)["volumeMounts"]:
        secret = volumes[mount["name"]].get("secret")
        if secret is None or wanted.parent != Path(mount["mountPath"]):
            continue
        paths = {item["path"]: item["key"] for item in secret["items"]}
        if wanted.name not in paths:
            return [f"the Secret's items do not give {wanted.name}"]
        example = one("Secret", secret["secretName"], docs)
        if paths[wanted.name] not in example["stringData"]:
            return [f"the Secret has no key {paths[wanted.name]}"]
        if not mount.get("readOnly"):
            return ["the users file is writable"]
        return []
    return [f"no Secret is mounted at {wanted.parent}"]


def test_users_file_is_mounted_where_the_bridge_reads_it() -> None:
    assert not users_file_problems(documents())

    def moved(docs: list[dict[str, Any]]) -> None:
        one("ConfigMap", "mtango-bridge", docs)["data"]["MTANGO_USERS_FILE"] = "/etc/users.yaml"

    assert users_file_problems(broken(moved)) == ["no Secret is mounted at /etc"]

    def renamed(docs: list[dict[str, Any]]) -> None:
        volume = [v for v in pod_spec(docs)["volumes"] if "secret" in v][0]
        volume["secret"]["items"][0]["path"] = "users.yml"

    assert users_file_problems(broken(renamed))


def test_example_users_file_is_refused_as_it_is(tmp_path) -> None:
    """The example's placeholders are no password hashes: a bridge with auth basic on it does
    not start (no one runs with a published credential)."""
    users = tmp_path / "users.yaml"
    users.write_text(one("Secret", "mtango-users")["stringData"]["users.yaml"])
    assert yaml.safe_load(users.read_text())["users"]
    with pytest.raises(ValueError, match="operator"):
        load_config(env={"MTANGO_AUTH": "basic", "MTANGO_USERS_FILE": str(users)})


def dockerfile_user() -> tuple[str, int]:
    text = (ROOT / "Dockerfile").read_text()
    name = re.findall(r"^USER\s+(\S+)", text, re.M)[-1]
    uid = re.search(rf"useradd\b[^\n]*--uid\s+(\d+)[^\n]*\b{re.escape(name)}\b", text)
    assert uid, "the Dockerfile's USER is made by useradd --uid"
    return name, int(uid.group(1))


def security_problems(docs: list[dict[str, Any]]) -> list[str]:
    _, uid = dockerfile_user()
    pod = pod_spec(docs).get("securityContext", {})
    own = container(docs).get("securityContext", {})
    problems = []
    if pod.get("runAsUser") != uid:
        problems.append(f"runAsUser {pod.get('runAsUser')} is not the image's user {uid}")
    if not pod.get("runAsNonRoot"):
        problems.append("runAsNonRoot is not set")
    if own.get("allowPrivilegeEscalation") is not False:
        problems.append("privilege escalation allowed")
    if own.get("capabilities", {}).get("drop") != ["ALL"]:
        problems.append("capabilities kept")
    if own.get("readOnlyRootFilesystem"):
        # The bridge writes its run directory (tempfile's, under /tmp) and nothing else.
        volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
        if not any(m["mountPath"] == "/tmp" and "emptyDir" in volumes[m["name"]]
                   for m in container(docs)["volumeMounts"]):
            problems.append("read-only root file system without a writable /tmp")
    return problems


def test_pod_runs_as_the_image_user_with_least_privilege() -> None:
    assert dockerfile_user() == ("mtango", 1000)
    assert container(documents())["securityContext"]["readOnlyRootFilesystem"] is True
    assert not security_problems(documents())

    def root(docs: list[dict[str, Any]]) -> None:
        pod_spec(docs)["securityContext"]["runAsUser"] = 0

    assert security_problems(broken(root)) == ["runAsUser 0 is not the image's user 1000"]

    def no_tmp(docs: list[dict[str, Any]]) -> None:
        mounts = container(docs)["volumeMounts"]
        mounts[:] = [m for m in mounts if m["mountPath"] != "/tmp"]

    assert security_problems(broken(no_tmp)) == [
        "read-only root file system without a writable /tmp"]


def test_run_directory_is_made_under_tmp(monkeypatch) -> None:
    """What the writable /tmp is for: main.py's run directory comes from tempfile, under /tmp
    when TMPDIR is not set (the image sets none)."""
    import os
    import tempfile

    import main

    made: list[str] = []
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.setattr(main, "_serve", lambda config, when_ready: made.append(
        os.environ["MTANGO_RUN_DIR"]))
    saved = dict(os.environ)  # serve() sets the run directory's variables for its workers
    try:
        os.environ.pop("TMPDIR", None)
        main.serve(Config())
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert made and Path(made[0]).parent == Path("/tmp")
    assert "TMPDIR" not in (ROOT / "Dockerfile").read_text()


def grace_problems(docs: list[dict[str, Any]]) -> list[str]:
    """After SIGTERM the bridge drains (shutdown_drain_s), then Sanic waits up to its graceful
    shutdown timeout for requests in flight, then the backends stop (a few seconds): all that
    within the grace period, or Kubernetes kills it midway."""
    from sanic.config import DEFAULT_CONFIG

    drain = load_config(env=config_env(docs)).shutdown_drain_s
    needed = drain + float(DEFAULT_CONFIG["GRACEFUL_SHUTDOWN_TIMEOUT"]) + 5
    grace = pod_spec(docs).get("terminationGracePeriodSeconds", 30)
    return [] if grace >= needed else [f"grace period {grace} s < {needed:g} s"]


def test_grace_period_covers_the_shutdown() -> None:
    assert load_config(env=config_env(documents())).shutdown_drain_s > 0
    assert not grace_problems(documents())

    def long_drain(docs: list[dict[str, Any]]) -> None:
        one("ConfigMap", "mtango-bridge", docs)["data"]["MTANGO_SHUTDOWN_DRAIN_S"] = "20"

    assert grace_problems(broken(long_drain)) == ["grace period 30 s < 40 s"]


def selector_problems(docs: list[dict[str, Any]]) -> list[str]:
    labels = one("Deployment", docs=docs)["spec"]["template"]["metadata"]["labels"]
    problems = []
    for doc in docs:
        spec = doc["spec"] if doc["kind"] in ("Service", "PodDisruptionBudget",
                                              "Deployment") else None
        if spec is None:
            continue
        selector = spec["selector"].get("matchLabels", spec["selector"])
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            problems.append(f"{doc['kind']}/{doc['metadata']['name']} selects no pod")
    target = one("HorizontalPodAutoscaler", docs=docs)["spec"]["scaleTargetRef"]
    if (target["kind"], target["name"]) != ("Deployment",
                                           one("Deployment", docs=docs)["metadata"]["name"]):
        problems.append("the autoscaler scales something else")
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    for ingress in (d for d in docs if d["kind"] == "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                service = services.get(backend["name"])
                if service is None or backend["port"]["name"] not in {
                        p["name"] for p in service["spec"]["ports"]}:
                    problems.append(f"Ingress path {path['path']} leads nowhere")
    return problems


def test_every_selector_and_reference_finds_its_target() -> None:
    assert not selector_problems(documents())

    def relabelled(docs: list[dict[str, Any]]) -> None:
        one("Service", "mtango-bridge-subscriptions", docs)["spec"]["selector"] = {"app": "x"}

    assert selector_problems(broken(relabelled)) == [
        "Service/mtango-bridge-subscriptions selects no pod"]

    def wrong_port(docs: list[dict[str, Any]]) -> None:
        ingress = one("Ingress", "mtango-bridge", docs)
        ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["name"] = "x"

    assert selector_problems(broken(wrong_port)) == ["Ingress path / leads nowhere"]


def ingress_problems(docs: list[dict[str, Any]]) -> list[str]:
    """What long-lived streams need on every path, and one replica per client for mTango
    subscriptions (they live in the replica that created them)."""
    config = load_config(env=config_env(docs))
    problems = []
    sticky = False
    for ingress in (d for d in docs if d["kind"] == "Ingress"):
        name = ingress["metadata"]["name"]
        notes = ingress["metadata"].get("annotations", {})
        for key in ("proxy-read-timeout", "proxy-send-timeout"):
            if float(notes.get(f"nginx.ingress.kubernetes.io/{key}", 60)) < 3600:
                problems.append(f"{name}: {key} below an hour")
        if notes.get("nginx.ingress.kubernetes.io/proxy-buffering") != "off":
            problems.append(f"{name}: responses buffered")
        paths = [p["path"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
        if "/tango/subscriptions" in paths:
            sticky = bool(notes.get("nginx.ingress.kubernetes.io/upstream-hash-by")
                          or notes.get("nginx.ingress.kubernetes.io/affinity"))
    if not sticky:
        problems.append("/tango/subscriptions is not routed by client")
    if config.http_keep_alive_timeout <= 60:
        problems.append("the bridge closes idle connections before ingress-nginx (60 s)")
    return problems


def test_ingress_keeps_streams_open_and_subscriptions_on_one_replica() -> None:
    assert not ingress_problems(documents())

    def round_robin(docs: list[dict[str, Any]]) -> None:
        del one("Ingress", "mtango-bridge-subscriptions", docs)["metadata"]["annotations"][
            "nginx.ingress.kubernetes.io/upstream-hash-by"]

    assert ingress_problems(broken(round_robin)) == [
        "/tango/subscriptions is not routed by client"]

    def buffered(docs: list[dict[str, Any]]) -> None:
        del one("Ingress", "mtango-bridge", docs)["metadata"]["annotations"][
            "nginx.ingress.kubernetes.io/proxy-buffering"]

    assert ingress_problems(broken(buffered)) == ["mtango-bridge: responses buffered"]
