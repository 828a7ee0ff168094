#!/usr/bin/env python3
"""Writes deploy/kubernetes/prometheusrule.yaml, the prometheus-operator form of
deploy/prometheus/alerts.yml (the one source of the rules; promtool tests that file).
deploy_check fails when the two differ: rerun this after editing alerts.yml.

  python3 scripts/gen-prometheusrule.py [--check]
"""
import os
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
source = os.path.join(root, "deploy", "prometheus", "alerts.yml")
target = os.path.join(root, "deploy", "kubernetes", "prometheusrule.yaml")

HEADER = """\
# Generated from deploy/prometheus/alerts.yml by scripts/gen-prometheusrule.py: do not edit here.
# The alert rules for prometheus-operator; kube-prometheus-stack's Prometheus selects rules by the
# release label (ruleSelector), as it does ServiceMonitors (see servicemonitor.yaml).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: engram-serve
  labels:
    release: kube-prometheus-stack
spec:
"""


def render():
    with open(source) as f:
        lines = f.read().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("groups:"))
    body = ["  " + l if l else "" for l in lines[start:]]
    return HEADER + "\n".join(body) + "\n"


def main():
    text = render()
    if "--check" in sys.argv:
        with open(target) as f:
            if f.read() != text:
                sys.exit(f"{target} differs from {source}: run python3 scripts/gen-prometheusrule.py")
        return
    with open(target, "w") as f:
        f.write(text)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
