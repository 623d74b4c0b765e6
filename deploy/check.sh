#!/usr/bin/env bash
# Offline check of the Kubernetes manifests: render each kustomization with `kubectl kustomize` and validate every
# object against the schemas of a pinned Kubernetes version with `kubernetes-validate --strict` (unknown fields are
# errors). kubernetes-validate bundles the schemas of Kubernetes' own kinds only: for a kind it has none of, it
# prints WARN and passes. Here that is an error, except for the CRD kinds listed in CRD_KINDS (ServiceMonitor), so a
# misspelled kind or apiVersion cannot slip through; tests/test_deploy.py checks the ServiceMonitor's fields.
#
#   deploy/check.sh                       # overlays/cpu, overlays/gpu, prometheus-adapter
#   deploy/check.sh overlays/gpu          # one kustomization (a path relative to deploy/k8s, or absolute)
#   K8S_VERSION=1.31.0 PYTHON=.venv/bin/python deploy/check.sh
set -euo pipefail
K8S_VERSION="${K8S_VERSION:-1.32.0}"
PYTHON="${PYTHON:-python3}"
CRD_KINDS="${CRD_KINDS:-ServiceMonitor}"
cd "$(dirname "$0")/k8s"
if [ "$#" -eq 0 ]; then
  set -- overlays/cpu overlays/gpu prometheus-adapter
fi
command -v kubectl >/dev/null || { echo "FAILED: kubectl not found (it carries kustomize)"; exit 2; }
rendered="$(mktemp)"
trap 'rm -f "$rendered"' EXIT
status=0
for target in "$@"; do
  if ! kubectl kustomize "$target" > "$rendered"; then
    echo "FAILED $target: kubectl kustomize"
    status=1
    continue
  fi
  objects=$(grep -c '^kind:' "$rendered" || true)
  if ! report=$("$PYTHON" -m kubernetes_validate --strict -k "$K8S_VERSION" --quiet "$rendered"); then
    echo "$report" | grep -v '^WARN' | sed "s|$rendered|$target|"
    echo "FAILED $target: kubernetes-validate --strict, Kubernetes $K8S_VERSION"
    status=1
    continue
  fi
  crd_pattern="for kind ($(echo "$CRD_KINDS" | tr ' ' '|')) with api version"
  unknown=$(echo "$report" | grep '^WARN' | grep -Ev "$crd_pattern" || true)
  if [ -n "$unknown" ]; then
    echo "$unknown" | sed "s|$rendered|$target|"
    echo "FAILED $target: a kind with no schema that is not a known CRD ($CRD_KINDS)"
    status=1
    continue
  fi
  crds=$(echo "$report" | grep -c '^WARN' || true)
  echo "ok $target: $((objects - crds)) objects valid against Kubernetes $K8S_VERSION (--strict)," \
    "$crds CRD object(s) ($CRD_KINDS) checked by tests/test_deploy.py"
done
exit "$status"
