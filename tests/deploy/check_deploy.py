#!/usr/bin/env python3
"""Checks deploy/: the alert rules and scrape config with promtool (incl. the rule unit tests), the
Grafana dashboard JSON, the Kubernetes manifests with `kubectl kustomize` (when kubectl exists), and
that every metric the rules and the dashboard query is declared by one of the two processes."""
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

with open(os.path.join(deploy, "grafana", "engram-serve.json")) as f:
    dashboard = json.load(f)
exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
if len(exprs) < 10:
    failures.append(f"dashboard has only {len(exprs)} queries")
with open(os.path.join(deploy, "prometheus", "alerts.yml")) as f:
    exprs.append(f.read())

# Metric names declared in code: string literals starting with engram_ in the metrics files.
declared = set()
for path in ("server/worker_metrics.cc", "memory_tier/tier_metrics.cc"):
    with open(os.path.join(src, path)) as f:
        declared |= set(re.findall(r'"(engram_[a-z0-9_]+)"', f.read()))
used = set()
for e in exprs:
    for name in re.findall(r"\b(engram_[a-z0-9_]+)", e):
        used.add(re.sub(r"_(bucket|sum|count)$", "", name))
for name in sorted(used - declared):
    failures.append(f"metric {name} is queried in deploy/ but declared by neither process")

kubectl = shutil.which("kubectl")
if kubectl:
    out = run([kubectl, "kustomize", deploy], src)
    for kind in ("StatefulSet", "Deployment", "ServiceMonitor", "Service"):
        if f"kind: {kind}" not in out:
            failures.append(f"kustomize output lacks a {kind}")
else:
    print("kubectl not found: skipping the kustomize render")

if failures:
    print("\n".join(failures))
    sys.exit(1)
print(f"deploy OK: {len(used)} metrics queried, all declared")
