"""test_manifests — checks of the Kubernetes manifests (deploy/k8s) and the image (docker/).

Role: load every deploy/k8s/*.yaml with PyYAML and check what a cluster would only tell at run
time: each daemon's Deployment has liveness (/healthz) and readiness (/readyz) probes on its
admin port, resource requests and limits, a grace period longer than its drain timeout, and only
PARLEY_* variables that are real flags of that daemon (from the option tables in the sources,
and from `parley-<name> --help` when the binaries are built); Services, HPAs, PDBs, ConfigMap,
Secret and PVC references resolve; commands name binaries that the Makefile builds and the
Dockerfile installs. Then schemas (kubernetes-validate, offline, strict), style (yamllint with
deploy/.yamllint) and the Dockerfile's runtime package names (apt-cache), including that those
packages provide every shared library the built daemons load (ldd + dpkg).

Needs: PyYAML; optional kubernetes-validate, yamllint, apt-cache/dpkg and built binaries in
$PARLEY_BUILD/bin (default build/bin): a check whose tool is missing is skipped with the reason.

What it does not do: talk to a cluster or a Docker engine, or render the kustomization (no
kubectl here); it checks the kustomization's resource list against the files instead.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install pyyaml)")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
BUILD = Path(os.environ.get("PARLEY_BUILD", "build"))
BUILD = BUILD if BUILD.is_absolute() else ROOT / BUILD
BIN = BUILD / "bin"

SERVICES = ("gateway", "chat", "infer-gateway", "worker", "history", "safety")
NAMESPACE = "parley"
IMAGE = "parley"          # the image name kustomization.yaml's `images:` rewrites
BIN_DIR = "/usr/local/bin"
NON_NAMESPACED = {"Namespace", "Kustomization"}

# Debian 12-slim ships these (Essential: yes / part of the base image); no apt-get needed.
BASE_IMAGE_PACKAGES = {"libc6", "libgcc-s1", "libc-bin"}


# --- loading -------------------------------------------------------------------------------------

def manifest_files() -> list[Path]:
    return sorted(K8S.glob("*.yaml"))


@lru_cache(maxsize=None)
def load_file(path: Path) -> tuple:
    with open(path, encoding="utf-8") as f:
        return tuple(d for d in yaml.safe_load_all(f) if d is not None)


def all_docs() -> list[tuple[Path, dict]]:
    return [(p, d) for p in manifest_files() for d in load_file(p)]


def docs_of(kind: str) -> list[dict]:
    return [d for _, d in all_docs() if d.get("kind") == kind]


def find(kind: str, name: str) -> dict | None:
    hits = [d for d in docs_of(kind) if d["metadata"]["name"] == name]
    assert len(hits) <= 1, f"{kind}/{name} is defined {len(hits)} times"
    return hits[0] if hits else None


def deployment(svc: str) -> dict:
    d = find("Deployment", f"parley-{svc}")
    assert d is not None, f"no Deployment parley-{svc} in deploy/k8s"
    return d


def daemon_container(svc: str) -> dict:
    spec = deployment(svc)["spec"]["template"]["spec"]
    hits = [c for c in spec["containers"] if c["name"] == svc]
    assert len(hits) == 1, f"Deployment parley-{svc} needs one container named {svc!r}"
    return hits[0]


def workloads() -> list[tuple[str, dict]]:
    """(label, pod spec) of every Deployment and Job."""
    out = []
    for kind in ("Deployment", "Job"):
        for d in docs_of(kind):
            out.append((f"{kind}/{d['metadata']['name']}", d["spec"]["template"]["spec"]))
    return out


# --- the daemons' real flags ----------------------------------------------------------------------

def env_name(flag: str) -> str:
    return "PARLEY_" + flag.upper().replace("-", "_")


OPT_RE = re.compile(r'\{\s*"([a-z0-9][a-z0-9-]*)"\s*,\s*CFG_[A-Z]+\b')


@lru_cache(maxsize=None)
def source_flags(svc: str) -> frozenset:
    """Flags from the option tables: libshared/daemon.c (common) + services/<svc>/*.c."""
    flags = set(OPT_RE.findall((ROOT / "libshared" / "daemon.c").read_text()))
    assert {"nats-url", "admin-addr", "admin-port", "drain-timeout"} <= flags, \
        "could not read the common option table from libshared/daemon.c"
    own = set()
    for src in sorted((ROOT / "services" / svc).glob("*.c")):
        own |= set(OPT_RE.findall(src.read_text()))
    return frozenset(flags | own)


@lru_cache(maxsize=None)
def source_admin_port(svc: str) -> int:
    src = (ROOT / "services" / svc / "main.c").read_text()
    m = re.search(r"\.admin_port_default\s*=\s*(\d+)", src)
    assert m, f"services/{svc}/main.c sets no .admin_port_default"
    return int(m.group(1))


def binary(svc: str) -> Path:
    return BIN / f"parley-{svc}"


@lru_cache(maxsize=None)
def help_text(svc: str) -> str | None:
    b = binary(svc)
    if not os.access(b, os.X_OK):
        return None
    r = subprocess.run([str(b), "--help"], capture_output=True, text=True, timeout=10,
                       env={"PATH": os.environ.get("PATH", "")})
    assert r.returncode == 0, f"{b} --help exited {r.returncode}: {r.stderr}"
    return r.stdout


def help_envs(text: str) -> dict[str, str]:
    """env name → flag, from --help lines '--flag <type>  help (default: …, env: PARLEY_X)'."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"\s*--([a-z0-9-]+)\b.*\benv: (PARLEY_[A-Z0-9_]+)\)", line)
        if m:
            out[m.group(2)] = m.group(1)
    return out


# --- values ---------------------------------------------------------------------------------------

def parse_duration_ms(s: str) -> int:
    """Same forms as cfg_parse_duration: '250ms', '15s', '2m', '1h', or bare milliseconds."""
    m = re.fullmatch(r"\s*(\d+)(ms|s|m|h)?\s*", s)
    assert m, f"bad duration {s!r}"
    return int(m.group(1)) * {None: 1, "ms": 1, "s": 1000, "m": 60000, "h": 3600000}[m.group(2)]


def parse_cfg_bytes(s: str) -> int:
    """Same forms as cfg_parse_bytes: '512', '64K', '64KiB', '256M', '2G' (powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:([KMGT])(?:i?B)?)?\s*", s)
    assert m, f"bad size {s!r}"
    return int(m.group(1)) << (10 * " KMGT".index(m.group(2) or " "))


def cpu_millis(q) -> int:
    s = str(q)
    return int(float(s[:-1])) if s.endswith("m") else int(float(s) * 1000)


def mem_bytes(q) -> int:
    s = str(q)
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
             "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    for u in sorted(units, key=len, reverse=True):
        if s.endswith(u):
            return int(float(s[:-len(u)]) * units[u])
    return int(float(s))


def effective_env(c: dict) -> dict:
    """What the container sees: envFrom (ConfigMaps / the Secret template), then env on top.
    Values are strings, or ('secret'|'configmap'|'field'|'resource', …) tuples for valueFrom."""
    env = {}
    for src in c.get("envFrom", []):
        assert "prefix" not in src, "envFrom with a prefix would rename the variables"
        if "configMapRef" in src:
            cm = find("ConfigMap", src["configMapRef"]["name"])
            assert cm is not None, f"envFrom names a missing ConfigMap {src['configMapRef']}"
            env.update({k: str(v) for k, v in cm.get("data", {}).items()})
        elif "secretRef" in src:
            sec = find("Secret", src["secretRef"]["name"])
            assert sec is not None, f"envFrom names a missing Secret {src['secretRef']['name']}"
            keys = list(sec.get("stringData", {})) + list(sec.get("data", {}))
            env.update({k: ("secret", sec["metadata"]["name"], k) for k in keys})
        else:
            raise AssertionError(f"unexpected envFrom source {src}")
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = str(e["value"])
        else:
            vf = e["valueFrom"]
            if "secretKeyRef" in vf:
                env[e["name"]] = ("secret", vf["secretKeyRef"]["name"], vf["secretKeyRef"]["key"])
            elif "configMapKeyRef" in vf:
                ref = vf["configMapKeyRef"]
                cm = find("ConfigMap", ref["name"])
                assert cm is not None and ref["key"] in cm.get("data", {}), f"bad ref {ref}"
                env[e["name"]] = str(cm["data"][ref["key"]])
            elif "fieldRef" in vf:
                env[e["name"]] = ("field", vf["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in vf:
                env[e["name"]] = ("resource", vf["resourceFieldRef"]["resource"])
            else:
                raise AssertionError(f"unexpected valueFrom {vf}")
    return env


def args_flags(c: dict) -> dict[str, str | None]:
    """--flag value / --flag=value pairs in the container's args (and command after argv[0])."""
    argv = list(c.get("command", [])[1:]) + list(c.get("args", []))
    out, i = {}, 0
    while i < len(argv):
        a = argv[i]
        assert a.startswith("--"), f"positional argument {a!r}: the daemons take none"
        if "=" in a:
            k, v = a[2:].split("=", 1)
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            k, v = a[2:], argv[i + 1]
            i += 1
        else:
            k, v = a[2:], None
        out[k] = v
        i += 1
    return out


def setting(svc: str, flag: str):
    """The value the daemon gets for `flag`: flag > environment > None (the binary's default)."""
    c = daemon_container(svc)
    fl = args_flags(c)
    if flag in fl:
        return fl[flag]
    return effective_env(c).get(env_name(flag))


def admin_port(svc: str) -> int:
    v = setting(svc, "admin-port")
    return int(v) if v is not None else source_admin_port(svc)


def port_number(c: dict, port) -> int:
    if isinstance(port, int):
        return port
    hits = [p["containerPort"] for p in c.get("ports", []) if p.get("name") == port]
    assert hits, f"container {c['name']} has no port named {port!r}"
    return hits[0]


def labels_match(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- structure ------------------------------------------------------------------------------------

def test_every_file_parses_with_names_and_namespace():
    files = manifest_files()
    assert files, "deploy/k8s holds no *.yaml"
    for p, d in all_docs():
        assert isinstance(d, dict) and d.get("apiVersion") and d.get("kind"), f"{p.name}: {d!r:.80}"
        if d["kind"] == "Kustomization":
            continue
        assert d["metadata"].get("name"), f"{p.name}: {d['kind']} without a name"
        if d["kind"] not in NON_NAMESPACED:
            assert d["metadata"].get("namespace") == NAMESPACE, \
                f"{p.name}: {d['kind']}/{d['metadata']['name']} is not in namespace {NAMESPACE}"
    ns = find("Namespace", NAMESPACE)
    assert ns is not None, "no Namespace parley"


def test_kustomization_lists_every_manifest():
    kus = docs_of("Kustomization")
    assert len(kus) == 1 and (K8S / "kustomization.yaml").is_file()
    k = kus[0]
    assert k.get("namespace") == NAMESPACE
    listed = k["resources"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    for r in listed:
        assert (K8S / r).is_file(), f"kustomization lists {r}, which does not exist"
    expected = {p.name for p in manifest_files()
                if p.name != "kustomization.yaml" and not p.name.endswith(".example.yaml")}
    assert set(listed) == expected, \
        f"not listed: {sorted(expected - set(listed))}; templates must be named *.example.yaml"
    assert "secret.example.yaml" not in listed, "the Secret template must not be applied"
    assert [i["name"] for i in k.get("images", [])] == [IMAGE]


def test_every_daemon_has_deployment_service_and_pdb():
    for svc in SERVICES:
        dep = deployment(svc)
        sel = dep["spec"]["selector"]["matchLabels"]
        tmpl_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert labels_match(sel, tmpl_labels), f"parley-{svc}: selector does not match its pods"
        assert tmpl_labels.get("app.kubernetes.io/component") == svc
        svcs = [s for s in docs_of("Service")
                if s["spec"].get("selector") and labels_match(s["spec"]["selector"], tmpl_labels)]
        assert [s["metadata"]["name"] for s in svcs] == [f"parley-{svc}"], \
            f"parley-{svc}: Services selecting its pods: {[s['metadata']['name'] for s in svcs]}"
        pdbs = [p for p in docs_of("PodDisruptionBudget")
                if labels_match(p["spec"]["selector"]["matchLabels"], tmpl_labels)]
        assert len(pdbs) == 1, f"parley-{svc}: {len(pdbs)} PodDisruptionBudgets"
    # No selector may pick pods of two daemons at once.
    for kind in ("Service", "PodDisruptionBudget"):
        for o in docs_of(kind):
            sel = o["spec"].get("selector")
            if not sel:
                continue
            sel = sel.get("matchLabels", sel)
            hits = [s for s in SERVICES
                    if labels_match(sel, deployment(s)["spec"]["template"]["metadata"]["labels"])]
            assert len(hits) <= 1, f"{kind}/{o['metadata']['name']} selects {hits}"


def test_services_target_existing_ports():
    for s in docs_of("Service"):
        if s["spec"].get("type") == "ExternalName":
            assert s["spec"].get("externalName")
            continue
        pods = [svc for svc in SERVICES
                if labels_match(s["spec"]["selector"],
                                deployment(svc)["spec"]["template"]["metadata"]["labels"])]
        assert len(pods) == 1, f"Service {s['metadata']['name']} selects {pods}"
        c = daemon_container(pods[0])
        for p in s["spec"]["ports"]:
            port_number(c, p.get("targetPort", p["port"]))


def test_gateway_service_exposes_api_and_admin():
    s = find("Service", "parley-gateway")
    ports = {p["name"]: p["port"] for p in s["spec"]["ports"]}
    assert ports.get("http") == 8080 and ports.get("admin") == admin_port("gateway")
    c = daemon_container("gateway")
    http_port = int(setting("gateway", "http-port") or 8080)
    assert port_number(c, "http") == http_port, "container port 'http' is not the API port"
    assert setting("gateway", "http-addr") == "0.0.0.0", "the API must listen beyond loopback"


def test_hpa_for_gateway_and_worker():
    targets = {}
    for h in docs_of("HorizontalPodAutoscaler"):
        ref = h["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment" and ref["apiVersion"] == "apps/v1"
        dep = find("Deployment", ref["name"])
        assert dep is not None, f"HPA {h['metadata']['name']} scales a missing {ref['name']}"
        assert "replicas" not in dep["spec"], \
            f"{ref['name']}: spec.replicas would fight the HPA on every apply"
        assert 1 <= h["spec"]["minReplicas"] <= h["spec"]["maxReplicas"]
        targets[ref["name"]] = h
    assert {"parley-gateway", "parley-worker"} <= set(targets)
    for name, h in targets.items():
        pdb = [p for p in docs_of("PodDisruptionBudget")
               if labels_match(p["spec"]["selector"]["matchLabels"],
                               find("Deployment", name)["spec"]["template"]["metadata"]["labels"])]
        min_avail = pdb[0]["spec"].get("minAvailable")
        if isinstance(min_avail, int):
            assert min_avail < h["spec"]["minReplicas"], f"{name}: the PDB would block every drain"


def test_pdbs_never_block_a_drain():
    for svc in SERVICES:
        dep = deployment(svc)
        replicas = dep["spec"].get("replicas")
        if replicas is None:
            continue  # HPA-managed: checked above
        for p in docs_of("PodDisruptionBudget"):
            if labels_match(p["spec"]["selector"]["matchLabels"],
                            dep["spec"]["template"]["metadata"]["labels"]):
                if "minAvailable" in p["spec"]:
                    assert p["spec"]["minAvailable"] < replicas, f"parley-{svc}: PDB blocks drains"
                else:
                    assert p["spec"]["maxUnavailable"] >= 1


# --- probes, ports, resources ---------------------------------------------------------------------

@pytest.mark.parametrize("svc", SERVICES)
def test_probes_on_admin_port(svc):
    c = daemon_container(svc)
    port = admin_port(svc)
    assert port_number(c, "admin") == port, f"{svc}: container port 'admin' is not {port}"
    live, ready = c.get("livenessProbe"), c.get("readinessProbe")
    assert live and ready, f"{svc}: liveness and readiness probes are required"
    assert live["httpGet"]["path"] == "/healthz"
    assert port_number(c, live["httpGet"]["port"]) == port
    assert ready["httpGet"]["path"] == "/readyz"
    assert port_number(c, ready["httpGet"]["port"]) == port
    if "startupProbe" in c:
        assert port_number(c, c["startupProbe"]["httpGet"]["port"]) == port
    assert setting(svc, "admin-addr") == "0.0.0.0", \
        f"{svc}: the admin server must listen on 0.0.0.0 in a pod (kubelet probes, Prometheus)"
    ann = deployment(svc)["spec"]["template"]["metadata"].get("annotations", {})
    assert ann.get("prometheus.io/scrape") == "true"
    assert ann.get("prometheus.io/port") == str(port)
    assert ann.get("prometheus.io/path") == "/metrics"


@pytest.mark.parametrize("svc", SERVICES)
def test_admin_port_default_matches_binary(svc):
    text = help_text(svc)
    if text is None:
        pytest.skip(f"{binary(svc)} is not built: the source table's default was used instead")
    m = re.search(r"--admin-port\b.*default: (\d+)", text)
    assert m and int(m.group(1)) == source_admin_port(svc)


def test_every_container_has_requests_and_limits():
    for label, pod in workloads():
        for c in pod["containers"] + pod.get("initContainers", []):
            res = c.get("resources", {})
            req, lim = res.get("requests", {}), res.get("limits", {})
            for r in ("cpu", "memory"):
                assert r in req and r in lim, f"{label}/{c['name']}: {r} request and limit needed"
            assert cpu_millis(req["cpu"]) <= cpu_millis(lim["cpu"]), f"{label}: cpu request > limit"
            assert mem_bytes(req["memory"]) <= mem_bytes(lim["memory"]), \
                f"{label}: memory request > limit"


def test_worker_sizing_models_and_threads():
    c = daemon_container("worker")
    req, lim = c["resources"]["requests"], c["resources"]["limits"]
    # Guaranteed QoS with whole CPUs: eligible for pinning, last to be evicted.
    assert cpu_millis(req["cpu"]) == cpu_millis(lim["cpu"]) and cpu_millis(lim["cpu"]) % 1000 == 0
    assert mem_bytes(req["memory"]) == mem_bytes(lim["memory"])
    assert cpu_millis(lim["cpu"]) >= 2000, "the worker is CPU-heavy"
    # Threads follow the CPU limit; "0 = all cores" would count the node's cores.
    assert setting("worker", "threads") == ("resource", "limits.cpu")
    # Memory: at least the KV budget per model plus room for the model files and buffers.
    models = setting("worker", "models")
    assert isinstance(models, str) and models, "PARLEY_MODELS must name the models to serve"
    kv = setting("worker", "kv-budget") or "256M"
    n = len(models.split(","))
    kv_bytes = parse_cfg_bytes(kv)
    assert mem_bytes(lim["memory"]) >= n * kv_bytes + (256 << 20), "memory < KV budgets + buffers"
    # Model paths are on a read-only mount of the models PVC; nothing is baked into the image.
    pod = deployment("worker")["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    for entry in models.split(","):
        name, _, path = entry.partition("=")
        assert name and path.startswith("/"), f"bad PARLEY_MODELS entry {entry!r}"
        owner = [m for m in mounts.values() if path.startswith(m["mountPath"].rstrip("/") + "/")]
        assert owner, f"{path} is on no volume mount"
        assert owner[0].get("readOnly") is True, "the worker mounts its models read-only"
        claim = vols[owner[0]["name"]]["persistentVolumeClaim"]["claimName"]
        assert find("PersistentVolumeClaim", claim) is not None, f"no PVC {claim}"


@pytest.mark.parametrize("svc", SERVICES)
def test_grace_period_exceeds_drain_timeout(svc):
    c = daemon_container(svc)
    pod = deployment(svc)["spec"]["template"]["spec"]
    drain = setting(svc, "drain-timeout")
    drain_ms = parse_duration_ms(drain) if drain is not None else 10000  # the binaries' default
    pre_stop_ms = 0
    hook = c.get("lifecycle", {}).get("preStop")
    if hook:
        if "sleep" in hook:
            pre_stop_ms = hook["sleep"]["seconds"] * 1000
        else:
            cmd = hook["exec"]["command"]
            assert cmd[0] == "sleep" and len(cmd) == 2, f"{svc}: unexpected preStop {cmd}"
            pre_stop_ms = int(cmd[1]) * 1000
    grace_ms = pod.get("terminationGracePeriodSeconds", 30) * 1000
    assert grace_ms > pre_stop_ms + drain_ms, \
        f"{svc}: grace {grace_ms} ms <= preStop {pre_stop_ms} ms + drain {drain_ms} ms"


def test_security_context():
    uid = dockerfile_uid()
    for label, pod in workloads():
        psc = pod.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True, f"{label}: runAsNonRoot"
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{label}: seccomp"
        assert pod.get("automountServiceAccountToken") is False, f"{label}: no API token needed"
        for c in pod["containers"]:
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, label
            assert sc.get("readOnlyRootFilesystem") is True, label
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], label
        if label.startswith("Deployment/"):
            assert psc.get("runAsUser") == uid, f"{label}: runAsUser is not the image's uid {uid}"


# --- environment and flags ------------------------------------------------------------------------

@pytest.mark.parametrize("svc", SERVICES)
def test_env_names_are_flags_of_the_daemon(svc):
    """Every PARLEY_* variable (env, envFrom ConfigMaps) and every argument is a flag of `svc`,
    according to the option tables in the sources."""
    c = daemon_container(svc)
    known = {env_name(f) for f in source_flags(svc)}
    env = effective_env(c)
    bad = sorted(k for k in env if k.startswith("PARLEY_") and k not in known)
    assert not bad, f"{svc}: not flags of parley-{svc}: {bad}"
    bad_args = sorted(set(args_flags(c)) - source_flags(svc))
    assert not bad_args, f"{svc}: unknown arguments {bad_args}"
    # Names that are not PARLEY_* are not read by the daemon at all: none should be set.
    stray = sorted(k for k in env if not k.startswith("PARLEY_"))
    assert not stray, f"{svc}: variables the daemon never reads: {stray}"


@pytest.mark.parametrize("svc", SERVICES)
def test_env_names_are_flags_per_help(svc):
    """The same against the built binary's --help (env: PARLEY_…), when it is built."""
    text = help_text(svc)
    if text is None:
        msg = f"{binary(svc)} is not built (make); checked against the source tables only"
        print(f"skipped: {msg}")
        pytest.skip(msg)
    envs = help_envs(text)
    assert "PARLEY_NATS_URL" in envs, f"could not parse {binary(svc)} --help"
    c = daemon_container(svc)
    bad = sorted(k for k in effective_env(c) if k.startswith("PARLEY_") and k not in envs)
    assert not bad, f"{svc}: `parley-{svc} --help` lists no {bad}"
    flags = set(envs.values())
    assert not set(args_flags(c)) - flags


def test_secret_and_configmap_references_resolve():
    secret = find("Secret", "parley-secrets")
    assert secret is not None, "secret.example.yaml must define parley-secrets"
    keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    for label, pod in workloads():
        for c in pod["containers"]:
            for k, v in effective_env(c).items():
                if isinstance(v, tuple) and v[0] == "secret":
                    assert v[1] == "parley-secrets" and v[2] in keys, f"{label}: {k} → {v}"
            for vol in pod.get("volumes", []):
                if "persistentVolumeClaim" in vol:
                    claim = vol["persistentVolumeClaim"]["claimName"]
                    assert find("PersistentVolumeClaim", claim) is not None, f"{label}: {claim}"
    # The template must not look usable as it is.
    assert all("REPLACE" in str(v) for v in secret.get("stringData", {}).values())
    assert setting("gateway", "api-key") == ("secret", "parley-secrets", "api-key")
    assert setting("history", "pg-url") == ("secret", "parley-secrets", "pg-url")


# --- image and commands ---------------------------------------------------------------------------

def makefile_services() -> list[str]:
    m = re.search(r"^SERVICES\s*:?=\s*(.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert m, "Makefile defines no SERVICES"
    return m.group(1).split()


@pytest.mark.parametrize("svc", SERVICES)
def test_image_and_command_name_a_real_binary(svc):
    c = daemon_container(svc)
    image = c["image"]
    assert image.split("@")[0].rsplit(":", 1)[0] == IMAGE, f"{svc}: image {image}"
    cmd = c.get("command")
    assert cmd and cmd[0] == f"{BIN_DIR}/parley-{svc}", f"{svc}: command {cmd}"
    assert svc in makefile_services(), f"the Makefile builds no parley-{svc}"
    assert f"parley-{svc}" in dockerfile_installed(), f"Dockerfile does not install parley-{svc}"
    if BIN.is_dir() and not binary(svc).exists():
        print(f"note: {binary(svc)} is not built yet")


def test_model_fetch_job_script_compiles():
    job = find("Job", "parley-model-fetch")
    if job is None:
        pytest.skip("no model-fetch Job")
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"][:2] == ["python3", "-c"]
    compile(c["args"][0], "model-fetch", "exec")
    env = {e["name"]: e.get("value") for e in c["env"]}
    worker_models = setting("worker", "models")
    assert f"/models/{env['MODEL_FILE']}" in worker_models, "the Job fetches what the worker serves"
    assert re.fullmatch(r"[0-9a-f]{64}", env["MODEL_SHA256"])


# --- schema and style -----------------------------------------------------------------------------

def test_schemas_with_kubernetes_validate():
    kv = pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed (pip install kubernetes-validate)")
    try:
        versions = kv.utils.all_versions()
    except Exception as e:  # noqa: BLE001 - any failure to find the bundled schemas
        pytest.skip(f"kubernetes-validate has no usable bundled schemas: {e}")
    # The oldest release still common in clusters we target, and the newest bundled.
    targets = sorted({v for v in versions if v.startswith("1.27.")} | {versions[-1]})
    checked = 0
    for p, d in all_docs():
        if d["kind"] == "Kustomization":
            continue
        for v in targets:
            try:
                kv.validate(d, v, strict=True)
            except kv.ValidationError as e:
                pytest.fail(f"{p.name}: {d['kind']}/{d['metadata']['name']} invalid for {v}: "
                            f"{e.message}")
            except (kv.SchemaNotFoundError, kv.utils.VersionNotSupportedError) as e:
                pytest.fail(f"{p.name}: {getattr(e, 'message', e)}")
            except OSError as e:
                pytest.skip(f"kubernetes-validate needs something unavailable here: {e}")
            checked += 1
    assert checked
    # The validator really rejects a mistake (so a pass above means something).
    broken = copy.deepcopy(deployment("chat"))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, targets[-1], strict=True)


def test_yamllint():
    pytest.importorskip("yamllint", reason="yamllint is not installed (pip install yamllint)")
    conf = ROOT / "deploy" / ".yamllint"
    assert conf.is_file()
    r = subprocess.run([sys.executable, "-m", "yamllint", "--strict", "-f", "parsable",
                        "-c", str(conf), "deploy/"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, f"yamllint:\n{r.stdout}{r.stderr}"


# --- Dockerfile -----------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def dockerfile_instructions() -> tuple:
    """(INSTRUCTION, text) pairs with continuation lines joined and comment lines dropped."""
    out, cur = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        s = line.strip()
        if s.startswith("#") or (not s and not cur):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        if cur.strip():
            word, _, rest = cur.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        cur = ""
    return tuple(out)


def dockerfile_stages() -> list[dict]:
    """[{'from': image, 'name': alias, 'runs': [...], 'other': [(instr, text)]}] with ARG
    defaults substituted in FROM."""
    args, stages = {}, []
    for instr, text in dockerfile_instructions():
        if instr == "ARG" and not stages:
            k, _, v = text.partition("=")
            args[k] = v.strip('"')
        elif instr == "FROM":
            parts = text.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), parts[0])
            alias = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append({"from": image, "name": alias, "runs": [], "other": []})
        elif instr == "RUN":
            stages[-1]["runs"].append(text)
        elif stages:
            stages[-1]["other"].append((instr, text))
    return stages


def apt_installed(stage: dict) -> list[str]:
    pkgs = []
    for run in stage["runs"]:
        for m in re.finditer(r"apt-get install (.*?)(?:&&|;|$)", run):
            pkgs += [t for t in m.group(1).split() if not t.startswith("-")]
    return pkgs


def runtime_stage() -> dict:
    return dockerfile_stages()[-1]


def dockerfile_uid() -> int:
    users = [t for i, t in runtime_stage()["other"] if i == "USER"]
    assert users, "the runtime stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid (runAsNonRoot)"
    return int(uid)


def dockerfile_installed() -> set[str]:
    names = set()
    for instr, text in runtime_stage()["other"]:
        if instr == "COPY" and text.rstrip().endswith(BIN_DIR + "/"):
            names |= {Path(t).name for t in text.split()[:-1] if not t.startswith("--")}
    return names


def test_dockerfile_stages_and_contents():
    stages = dockerfile_stages()
    assert len(stages) == 2, "multi-stage: build, then runtime"
    build, rt = stages
    assert build["from"] == "debian:12" and rt["from"] == "debian:12-slim"
    want_dev = {"libnats-dev", "libmicrohttpd-dev", "libpq-dev", "libhiredis-dev", "libcjson-dev",
                "libprotobuf-c-dev", "protobuf-c-compiler", "libsodium-dev", "gcc", "make"}
    assert want_dev <= set(apt_installed(build)), f"missing: {want_dev - set(apt_installed(build))}"
    assert any(re.search(r"\bmake\b.*\ball\b", r) for r in build["runs"])
    rt_pkgs = apt_installed(rt)
    assert rt_pkgs and not [p for p in rt_pkgs if p.endswith("-dev") or p in ("gcc", "make")], \
        f"runtime stage installs build tools: {rt_pkgs}"
    assert dockerfile_installed() >= {f"parley-{s}" for s in SERVICES}
    copies = [t for i, t in rt["other"] if i == "COPY"]
    assert all(t.startswith(f"--from={build['name']}") for t in copies), \
        "the runtime stage copies only the built binaries"
    assert not any("models" in t or ".gguf" in t for t in copies), "no model in the image"
    dockerfile_uid()
    exposed = {int(p.split("/")[0]) for i, t in rt["other"] if i == "EXPOSE" for p in t.split()}
    assert {8080} | {source_admin_port(s) for s in SERVICES} <= exposed


def test_dockerfile_run_steps_are_valid_shell():
    sh = shutil.which("sh")
    if not sh:
        pytest.skip("no sh to check the RUN steps with")
    runs = [r for st in dockerfile_stages() for r in st["runs"]]
    assert runs
    for r in runs:
        assert not r.startswith("["), "RUN steps use the shell form"
        p = subprocess.run([sh, "-n", "-c", r], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, f"sh -n rejects RUN {r[:80]}…: {p.stderr}"


def test_dockerignore_keeps_outputs_out():
    p = ROOT / ".dockerignore"
    assert p.is_file(), "docker build -f docker/Dockerfile . reads .dockerignore at the root"
    lines = {ln.strip().strip("/") for ln in p.read_text().splitlines()
             if ln.strip() and not ln.startswith("#")}
    assert {"build", "var", "models", ".git"} <= lines


def apt_known(pkgs) -> set[str]:
    """The names among `pkgs` that apt-cache knows (one call: apt-cache is slow to start)."""
    r = subprocess.run(["apt-cache", "show", "--no-all-versions", *pkgs], capture_output=True,
                       text=True, timeout=120)
    return set(re.findall(r"^Package: (\S+)$", r.stdout, re.M)) & set(pkgs)


def test_runtime_packages_exist_in_debian():
    if not shutil.which("apt-cache"):
        pytest.skip("apt-cache is not available (not a Debian machine)")
    pkgs = {p for stage in dockerfile_stages() for p in apt_installed(stage)}
    known = apt_known(sorted(pkgs | {"libc6"}))
    if "libc6" not in known:
        pytest.skip("apt-cache knows no packages here (run apt-get update)")
    for stage in dockerfile_stages():
        missing = [p for p in apt_installed(stage) if p not in known]
        assert not missing, f"stage {stage['name']}: no such Debian packages: {missing}"


def apt_closure(pkgs: list[str]) -> set[str]:
    r = subprocess.run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
                        "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *pkgs],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = set(pkgs)
    for line in r.stdout.splitlines():
        m = re.match(r"\s*(?:\|?(?:Pre)?Depends: )?<?([a-z0-9][a-z0-9.+-]*)>?$", line)
        if m:
            out.add(m.group(1))
    return out


def owning_packages(paths: set[str]) -> dict[str, str]:
    """path → Debian package that ships it (dpkg -S, batched; usrmerge: tries /usr/lib paths
    and the names as given). Paths no package owns are absent."""
    out: dict[str, str] = {}
    for variant in (os.path.realpath, lambda x: x):
        todo = {variant(p): p for p in paths if p not in out}
        if not todo:
            break
        r = subprocess.run(["dpkg", "-S", *sorted(todo)], capture_output=True, text=True,
                           timeout=120)
        for line in r.stdout.splitlines():
            pkg, sep, path = line.partition(": ")
            if sep and path.strip() in todo and "," not in pkg:
                out[todo[path.strip()]] = pkg.split(":")[0].strip()
    return out


def test_runtime_packages_cover_the_binaries():
    """Every shared library a built daemon loads comes from a package the runtime stage installs
    (or one those depend on, or the base image's libc)."""
    built = [binary(s) for s in SERVICES if os.access(binary(s), os.X_OK)]
    if not built:
        pytest.skip(f"no daemons built in {BIN}")
    for tool in ("apt-cache", "dpkg", "ldd"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not available")
    if not apt_known(["libc6"]):
        pytest.skip("apt-cache knows no packages here (run apt-get update)")
    allowed = apt_closure(apt_installed(runtime_stage())) | BASE_IMAGE_PACKAGES
    loads: dict[str, set[str]] = {}  # library path → binaries that load it
    for b in built:
        r = subprocess.run(["ldd", str(b)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert "not found" not in r.stdout, f"{b.name}: {r.stdout}"
        for m in re.finditer(r"^\s*\S+ => (/\S+)", r.stdout, re.M):
            loads.setdefault(m.group(1), set()).add(b.name)
    assert loads, "ldd reported no libraries"
    owners = owning_packages(set(loads))
    # Libraries no package owns come from a local build: nothing to check for them.
    bad = sorted(f"{lib} ({owners[lib]}, used by {sorted(loads[lib])})"
                 for lib in owners if owners[lib] not in allowed)
    assert not bad, f"the runtime stage does not install the packages of: {bad}"
    assert {"libnats3.4", "libprotobuf-c1"} <= set(owners.values()), \
        f"could not map libraries to packages: {owners}"
