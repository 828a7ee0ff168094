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
