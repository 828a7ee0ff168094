#!/usr/bin/env python3
"""Checks deploy/: the alert rules and scrape config with promtool (incl. the rule unit tests; every
alert has a test, a description and a runbook), the Grafana dashboard JSON, that every metric the
rules and the dashboard query is declared by one of the processes, the PrometheusRule in sync with
alerts.yml, every Kubernetes manifest against the Kubernetes and prometheus-operator/KEDA schemas
(offline: npm kubernetes-models, fetched by scripts/fetch-testdata.sh; with a negative control
that proves the validation rejects broken objects), the `kubectl kustomize` render (when kubectl
exists), and the deployment's own rules: probe budgets, drain order, security context, QoS,
node-local tier address, Prometheus Operator labels (also with negative controls)."""
import copy
import glob
import json
import os
import re
import shutil
import subprocess
import sys

src = os.environ.get("ENGRAM_SOURCE_DIR") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
deploy = os.path.join(src, "deploy")
failures = []


def run(cmd, cwd):
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        failures.append(f"{' '.join(cmd)} failed:\n{p.stdout}{p.stderr}")
    return p.stdout


promtool = shutil.which("promtool")
if not promtool:
    failures.append("promtool not found (Debian package prometheus; scripts/install-deps.sh installs it)")
else:
    prom = os.path.join(deploy, "prometheus")
    run([promtool, "check", "rules", "alerts.yml"], prom)
    run([promtool, "test", "rules", "alerts_test.yml"], prom)
    run([promtool, "check", "config", "prometheus.yml"], prom)

# Every alert: a description, a runbook_url whose anchor is a section of docs/operations.md, and a
# promtool test in which it fires.
with open(os.path.join(src, "docs", "operations.md")) as f:
    anchors = set()
    for line in f:
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
with open(os.path.join(deploy, "prometheus", "alerts.yml")) as f:
    rules_text = f.read()
with open(os.path.join(deploy, "prometheus", "alerts_test.yml")) as f:
    tests_text = f.read()
alert_names = re.findall(r"^\s*- alert: (\w+)", rules_text, re.M)
if len(alert_names) < 10:
    failures.append(f"alerts.yml has only {len(alert_names)} alerts")
for block in re.split(r"^\s*- alert: ", rules_text, flags=re.M)[1:]:
    name = block.split()[0]
    if "description:" not in block:
        failures.append(f"alert {name} has no description")
    m = re.search(r'runbook_url: "[^"#]*#([^"]+)"', block)
    if not m:
        failures.append(f"alert {name} has no runbook_url")
    elif m.group(1) not in anchors:
        failures.append(f"alert {name}: runbook anchor #{m.group(1)} is no heading of docs/operations.md")
    fires = re.search(r"alertname: " + name + r"\n\s*exp_alerts:\n\s*- exp_labels", tests_text)
    if not fires:
        failures.append(f"alert {name} has no promtool test in which it fires (alerts_test.yml)")

with open(os.path.join(deploy, "grafana", "engram-serve.json")) as f:
    dashboard = json.load(f)
exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
if len(exprs) < 10:
    failures.append(f"dashboard has only {len(exprs)} queries")
with open(os.path.join(deploy, "prometheus", "alerts.yml")) as f:
    exprs.append(f.read())

# Metric names declared in code: string literals starting with engram_ in the metrics files.
declared = set()
for path in ("server/worker_metrics.cc", "memory_tier/tier_metrics.cc", "common/process_metrics.cc"):
    with open(os.path.join(src, path)) as f:
        declared |= set(re.findall(r'"(engram_[a-z0-9_]+)"', f.read()))
used = set()
for e in exprs:
    for name in re.findall(r"\b(engram_[a-z0-9_]+)", e):
        used.add(re.sub(r"_(bucket|sum|count)$", "", name))
for name in sorted(used - declared):
    failures.append(f"metric {name} is queried in deploy/ but declared by neither process")

# ---- Kubernetes manifests ------------------------------------------------------------------------

import yaml  # Debian python3-yaml

run([sys.executable, os.path.join(src, "scripts", "gen-prometheusrule.py"), "--check"], src)

manifest_files = sorted(glob.glob(os.path.join(deploy, "kubernetes", "*.yaml")) +
                        glob.glob(os.path.join(deploy, "examples", "*.yaml")) +
                        glob.glob(os.path.join(deploy, "cluster", "*.yaml")))
rendered = None
kubectl = shutil.which("kubectl")
if kubectl:
    out = run([kubectl, "kustomize", deploy], src)
    for kind in ("StatefulSet", "Deployment", "ServiceMonitor", "PrometheusRule", "Service",
                 "PodDisruptionBudget", "PersistentVolumeClaim", "Namespace"):
        if f"kind: {kind}" not in out:
            failures.append(f"kustomize output lacks a {kind}")
    rendered = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"engram-kustomize-{os.getpid()}.yaml")
    with open(rendered, "w") as f:
        f.write(out)
else:
    print("kubectl not found: skipping the kustomize render (the manifests are validated as files)")

tools = os.environ.get("ENGRAM_DEPLOY_TOOLS") or os.path.join(src, ".cache", "deploy-tools")
validator = os.path.join(src, "tests", "deploy", "validate_k8s.mjs")
node = shutil.which("node")
if not node or not os.path.isdir(os.path.join(tools, "node_modules", "kubernetes-models")):
    failures.append(f"schema validation needs node and npm kubernetes-models in {tools}: "
                    "run scripts/fetch-testdata.sh")
else:
    # The negative control first: broken objects must be rejected, or the validation proves nothing.
    out = run([node, validator, tools, "--self-test"], src)
    print(out, end="")
    out = run([node, validator, tools] + manifest_files + ([rendered] if rendered else []), src)
    print(out, end="")
if rendered:
    os.remove(rendered)


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def find(docs, kind, name):
    for d in docs:
        if d.get("kind") == kind and d["metadata"]["name"] == name:
            return d
    return None


def budget(probe):
    return probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)


def sleep_of(container):
    cmd = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    return int(cmd[-1]) if cmd and cmd[0].endswith("sleep") else 0


def flag(container, name, default=None):
    for a in container.get("args", []):
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return default


def seconds(text):
    m = re.fullmatch(r"([0-9.]+)(ms|s|m)?", text)
    v = float(m.group(1))
    return v / 1000 if m.group(2) == "ms" else v * 60 if m.group(2) == "m" else v


def policy(docs):
    """The deployment's own rules; a list of what is wrong."""
    bad = []
    worker = find(docs, "Deployment", "engram-worker")
    tier = find(docs, "StatefulSet", "engram-memory")
    if not worker or not tier:
        return ["the engram-worker Deployment or the engram-memory StatefulSet is missing"]
    w_pod, t_pod = worker["spec"]["template"]["spec"], tier["spec"]["template"]["spec"]
    w, t = w_pod["containers"][0], t_pod["containers"][0]
    # Probes: a worker waiting for its tier is never restarted.
    if budget(w["startupProbe"]) <= budget(t["startupProbe"]):
        bad.append(f"worker startupProbe budget {budget(w['startupProbe'])} s does not cover the "
                   f"tier's {budget(t['startupProbe'])} s")
    if "tcpSocket" not in w["livenessProbe"]:
        bad.append("worker livenessProbe must not be gRPC health (NOT_SERVING while the tier is away)")
    # Drain order: the tier outlives its workers' drain.
    w_drain = seconds(flag(w, "drain-timeout", "30s"))
    if w_pod["terminationGracePeriodSeconds"] < sleep_of(w) + w_drain + 2:
        bad.append("worker terminationGracePeriodSeconds does not cover preStop + --drain-timeout")
    if sleep_of(t) <= sleep_of(w) + w_drain:
        bad.append(f"tier preStop {sleep_of(t)} s ends before its workers' drain "
                   f"({sleep_of(w)} s preStop + {w_drain:g} s)")
    t_drain = float(flag(t, "drain-timeout-s", "10"))
    if t_pod["terminationGracePeriodSeconds"] < sleep_of(t) + t_drain + 2:
        bad.append("tier terminationGracePeriodSeconds does not cover preStop + its drain")
    # Node-local tier address.
    local = find(docs, "Service", "engram-memory-local")
    memory = flag(w, "memory", "")
    if not local or local["spec"].get("internalTrafficPolicy") != "Local":
        bad.append("no Service engram-memory-local with internalTrafficPolicy: Local")
    elif not memory.startswith("engram-memory-local:"):
        bad.append(f"worker --memory={memory} is not the node-local Service")
    # Security.
    for kind, pod in (("worker", w_pod), ("tier", t_pod)):
        sc = pod.get("securityContext", {})
        if not sc.get("runAsNonRoot") or not isinstance(sc.get("runAsUser"), int) or sc["runAsUser"] == 0:
            bad.append(f"{kind}: runAsNonRoot with a numeric non-root runAsUser")
        if sc.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{kind}: no seccomp profile")
        for c in pod.get("initContainers", []) + pod["containers"]:
            csc = c.get("securityContext", {})
            if csc.get("allowPrivilegeEscalation") is not False:
                bad.append(f"{kind} container {c['name']}: allowPrivilegeEscalation is not false")
            if csc.get("readOnlyRootFilesystem") is not True:
                bad.append(f"{kind} container {c['name']}: root filesystem is not read-only")
            if "ALL" not in csc.get("capabilities", {}).get("drop", []):
                bad.append(f"{kind} container {c['name']}: capabilities are not all dropped")
    profile = t_pod.get("securityContext", {}).get("seccompProfile", {})
    if profile.get("type") != "Localhost":
        bad.append("tier: RuntimeDefault seccomp blocks io_uring; use the Localhost profile")
    elif not os.path.exists(os.path.join(deploy, "seccomp", os.path.basename(profile["localhostProfile"]))):
        bad.append(f"tier: seccomp profile {profile['localhostProfile']} is not in deploy/seccomp")
    # Guaranteed QoS for the tier.
    for c in t_pod.get("initContainers", []) + t_pod["containers"]:
        r = c.get("resources", {})
        for res in ("cpu", "memory"):
            if res not in r.get("limits", {}) or r.get("requests", {}).get(res) != r["limits"][res]:
                bad.append(f"tier container {c['name']}: {res} requests != limits (not Guaranteed)")
    # GPU tolerations.
    for kind, pod in (("worker", w_pod), ("tier", t_pod)):
        if not any(tol.get("key") == "nvidia.com/gpu" for tol in pod.get("tolerations", [])):
            bad.append(f"{kind}: no nvidia.com/gpu toleration")
    # Disruption budgets and Prometheus Operator selection labels.
    for name in ("engram-worker", "engram-memory"):
        if not find(docs, "PodDisruptionBudget", name):
            bad.append(f"no PodDisruptionBudget {name}")
    for kind in ("ServiceMonitor", "PrometheusRule"):
        objs = [d for d in docs if d.get("kind") == kind]
        if not objs or any("release" not in d["metadata"].get("labels", {}) for d in objs):
            bad.append(f"{kind} without the release label kube-prometheus-stack selects")
    ns = find(docs, "Namespace", "engram")
    if not ns or not any(k.startswith("pod-security.kubernetes.io/") for k in ns["metadata"].get("labels", {})):
        bad.append("the namespace has no Pod Security labels")
    # The import: an init container importing the model the worker serves, from the model PVC.
    if not any("import" in " ".join(c.get("command", [])) for c in t_pod.get("initContainers", [])):
        bad.append("tier: no init container imports the tables")
    if not find(docs, "PersistentVolumeClaim", "engram-model"):
        bad.append("no PersistentVolumeClaim engram-model (the model the pods mount)")
    bad += network_policy(docs)
    return bad


def admitted(np, port):
    """The `from` lists of the ingress rules of NetworkPolicy `np` that admit TCP `port`;
    [[]] (from anywhere) for a rule without `from`."""
    out = []
    for rule in np["spec"].get("ingress", []):
        ports = rule.get("ports")
        if ports is None or any(p.get("port") == port for p in ports):
            out.append(rule.get("from", []))
    return out


def is_prometheus(peer):
    return (peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "prometheus"
            and "namespaceSelector" in peer)


def network_policy(docs):
    """The tier's gRPC port admits engram-worker pods only, every metrics port Prometheus only."""
    bad = []
    tier_np = find(docs, "NetworkPolicy", "engram-memory")
    worker_np = find(docs, "NetworkPolicy", "engram-worker")
    if not tier_np or not worker_np:
        return ["no NetworkPolicy engram-memory and engram-worker"]
    for np, app in ((tier_np, "engram-memory"), (worker_np, "engram-worker")):
        if np["spec"].get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") != app:
            bad.append(f"NetworkPolicy {app} does not select the {app} pods")
        if "Ingress" not in np["spec"].get("policyTypes", []):
            bad.append(f"NetworkPolicy {app} does not restrict ingress")
    for froms in admitted(tier_np, 50052):
        if not froms or any(
                "namespaceSelector" in peer or "ipBlock" in peer or
                peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") != "engram-worker"
                for peer in froms):
            bad.append("tier gRPC port 50052 admits more than engram-worker pods")
    if not admitted(tier_np, 50052):
        bad.append("tier gRPC port 50052 admits no one (not even the workers)")
    for np, port in ((tier_np, 9092), (worker_np, 9400)):
        rules = admitted(np, port)
        if not rules:
            bad.append(f"metrics port {port} admits no one (not even Prometheus)")
        for froms in rules:
            if not froms or not all(is_prometheus(peer) for peer in froms):
                bad.append(f"metrics port {port} admits more than Prometheus")
    return bad


docs = []
for path in glob.glob(os.path.join(deploy, "kubernetes", "*.yaml")):
    docs += load(path)
failures += policy(docs)

# Negative controls: each broken copy must be caught by the policy.
def mutated(change):
    d = copy.deepcopy(docs)
    change(d)
    return d

controls = {
    "worker startup budget below the tier's":
        lambda d: find(d, "Deployment", "engram-worker")["spec"]["template"]["spec"]["containers"][0]["startupProbe"].update(failureThreshold=10),
    "tier preStop shorter than the worker drain":
        lambda d: find(d, "StatefulSet", "engram-memory")["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"].update(command=["/bin/sleep", "5"]),
    "privilege escalation allowed":
        lambda d: find(d, "Deployment", "engram-worker")["spec"]["template"]["spec"]["containers"][0]["securityContext"].update(allowPrivilegeEscalation=True),
    "tier on RuntimeDefault seccomp":
        lambda d: find(d, "StatefulSet", "engram-memory")["spec"]["template"]["spec"]["securityContext"].update(seccompProfile={"type": "RuntimeDefault"}),
    "tier not Guaranteed":
        lambda d: find(d, "StatefulSet", "engram-memory")["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"].update(cpu="8"),
    "tier gRPC open to every pod":
        lambda d: find(d, "NetworkPolicy", "engram-memory")["spec"]["ingress"][0].pop("from"),
    "worker metrics open to anyone":
        lambda d: find(d, "NetworkPolicy", "engram-worker")["spec"]["ingress"][0].pop("ports"),
    "no NetworkPolicy for the tier":
        lambda d: d.remove(find(d, "NetworkPolicy", "engram-memory")),
    "worker dials engram-memory-0":
        lambda d: find(d, "Deployment", "engram-worker")["spec"]["template"]["spec"]["containers"][0].update(args=["--memory=engram-memory-0.engram-memory:50052"]),
}
for name, change in controls.items():
    if not policy(mutated(change)):
        failures.append(f"negative control not caught by the policy check: {name}")

if failures:
    print("\n".join(failures))
    sys.exit(1)
print(f"deploy OK: {len(used)} metrics queried, all declared; {len(manifest_files)} manifest files "
      f"validated; {len(controls)} policy controls caught")
