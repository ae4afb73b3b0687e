#!/usr/bin/env bash
# The Kubernetes manifests (deploy/kubernetes/), rendered and validated offline, no cluster:
#
#   scripts/kubernetes.sh install          kubectl (apt) if missing; the validators into a venv
#   scripts/kubernetes.sh render [OVERLAY] print `kubectl kustomize` of an overlay (aws, local)
#   scripts/kubernetes.sh prometheusrule   rewrite base/prometheusrule.yaml from the alert rules
#   scripts/kubernetes.sh validate         install, then render both overlays into .run/k8s/ and
#                                          validate every object (what scripts/test.sh runs)
#
# Validation: core kinds with kubernetes-validate --strict (its schemas ship in the package,
# so no network; --strict refuses unknown fields, which it otherwise lets through). KEDA's
# ScaledObject and TriggerAuthentication against KEDA's own CRD schemas, kept in
# deploy/kubernetes/schemas/, made strict the same way (an unknown field fails, as the API
# server's strict field validation would have it). The Prometheus operator's PodMonitor and
# PrometheusRule against its CRDs when SQS2PG_PROMETHEUS_OPERATOR_CRDS names a folder of
# them (monitoring.coreos.com_*.yaml); otherwise they are only checked by
# tests/api/kubernetes.rs (the rules equal dashboards/prometheus/alerts.yml, the scrape matches
# the pods). Each run also proves the validators strict: a `bogusField` slipped into a
# container and into the ScaledObject must each be refused.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPLOY="$ROOT/deploy/kubernetes"
OUT="$ROOT/.run/k8s"
VENV="$ROOT/.run/k8s-venv"
OVERLAYS=(aws local)
# The Kubernetes version the core kinds are checked against (EKS's supported range).
KUBERNETES_VERSION="${SQS2PG_KUBERNETES_VERSION:-1.32.0}"
PIP=('kubernetes-validate==1.37.0' 'jsonschema==4.26.0' 'PyYAML==6.0.3')

log() { printf '[kubernetes] %s\n' "$*" >&2; }

install() {
  if ! command -v kubectl >/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
      log "kubectl not found and not root: install kubectl (it includes kustomize) and retry"
      exit 1
    fi
    log "installing kubectl"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubectl >/dev/null \
      || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
  fi
  if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import kubernetes_validate, jsonschema, yaml' 2>/dev/null; then
    log "installing ${PIP[*]} into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "${PIP[@]}"
  fi
}

render() {
  local overlay="${1:?usage: render OVERLAY (${OVERLAYS[*]})}"
  kubectl kustomize "$DEPLOY/overlays/$overlay"
}

# The PrometheusRule is generated, never edited: its groups are alerts.yml's.
prometheusrule_text() {
  "$VENV/bin/python" - "$ROOT/dashboards/prometheus/alerts.yml" <<'PY'
import sys, yaml
groups = yaml.safe_load(open(sys.argv[1]))["groups"]
rule = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "PrometheusRule",
    "metadata": {"name": "sqs2pg"},
    "spec": {"groups": groups},
}
print("# GENERATED from dashboards/prometheus/alerts.yml by `scripts/kubernetes.sh prometheusrule`:")
print("# edit alerts.yml, then run that. tests/api/kubernetes.rs checks the two agree.")
print(yaml.safe_dump(rule, sort_keys=False, width=100, allow_unicode=True), end="")
PY
}

prometheusrule() {
  install
  prometheusrule_text >"$DEPLOY/base/prometheusrule.yaml"
  log "wrote deploy/kubernetes/base/prometheusrule.yaml"
}

# Validates custom resources in the rendered files against CRD schemas: $1 is a folder of
# CRD files, the rest are rendered files. Exits 1 on the first file with a failure.
validate_custom() {
  "$VENV/bin/python" - "$@" <<'PY'
import copy, glob, os, sys, yaml, jsonschema

crd_dir, files = sys.argv[1], sys.argv[2:]
schemas = {}
for path in glob.glob(os.path.join(crd_dir, "*.yaml")):
    crd = yaml.safe_load(open(path))
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    for version in crd["spec"]["versions"]:
        schemas[(f"{group}/{version['name']}", kind)] = (path, version["schema"]["openAPIV3Schema"])

def strict(schema):
    """Unknown fields fail: what the API server prunes or, with strict field validation,
    refuses. Objects that declare properties and no additionalProperties get `false`."""
    schema = copy.deepcopy(schema)
    def walk(node):
        if isinstance(node, dict):
            if (node.get("type") == "object" and "properties" in node
                    and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(schema)
    # ObjectMeta is the API server's to check (kubernetes-validate does it for core kinds).
    schema["properties"]["metadata"] = {"type": "object"}
    return schema

failed = checked = 0
for path in files:
    for doc in yaml.safe_load_all(open(path)):
        if not doc:
            continue
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key not in schemas:
            continue
        crd_path, schema = schemas[key]
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        errors = sorted(jsonschema.Draft7Validator(strict(schema)).iter_errors(doc), key=str)
        checked += 1
        for error in errors:
            where = ".".join(str(p) for p in error.absolute_path) or "(root)"
            print(f"ERROR {path}: {name} against {os.path.relpath(crd_path)}: {where}: {error.message}")
        if errors:
            failed += 1
        else:
            print(f"INFO {path}: {name} passed against {os.path.relpath(crd_path)}")
if checked == 0:
    print(f"ERROR no custom resource in {files} has a schema in {crd_dir}")
    sys.exit(1)
sys.exit(1 if failed else 0)
PY
}

# Core kinds. Custom kinds are validate_custom's: kubernetes-validate has no schema for them
# and only warns (--no-warn), so they pass here whatever they hold.
validate_core() {
  "$VENV/bin/kubernetes-validate" --strict --quiet --no-warn -k "$KUBERNETES_VERSION" "$@"
}

# A validator that accepts a file with a bogusField is not strict: fail the run.
expect_refused() {
  local what="$1"
  shift
  if "$@" >"$OUT/refused.log" 2>&1; then
    cat "$OUT/refused.log" >&2
    log "FAILED: the validator accepted $what"
    exit 1
  fi
  grep -q bogusField "$OUT/refused.log" || {
    cat "$OUT/refused.log" >&2
    log "FAILED: $what was refused, but not for its bogusField"
    exit 1
  }
  log "refused, as it must be: $what"
}

validate() {
  install
  mkdir -p "$OUT"
  prometheusrule_text >"$OUT/prometheusrule.yaml"
  if ! diff -u "$DEPLOY/base/prometheusrule.yaml" "$OUT/prometheusrule.yaml"; then
    log "FAILED: base/prometheusrule.yaml is stale: run scripts/kubernetes.sh prometheusrule"
    exit 1
  fi
  local rendered=()
  for overlay in "${OVERLAYS[@]}"; do
    render "$overlay" >"$OUT/$overlay.yaml"
    rendered+=("$OUT/$overlay.yaml")
    log "rendered $overlay: $(grep -c '^kind:' "$OUT/$overlay.yaml") objects -> .run/k8s/$overlay.yaml"
  done
  validate_core "${rendered[@]}"
  log "core kinds valid against Kubernetes $KUBERNETES_VERSION (strict)"
  validate_custom "$DEPLOY/schemas/keda-v2.20.2" "${rendered[@]}"
  if [ -n "${SQS2PG_PROMETHEUS_OPERATOR_CRDS:-}" ]; then
    validate_custom "$SQS2PG_PROMETHEUS_OPERATOR_CRDS" "${rendered[@]}"
  else
    log "PodMonitor, PrometheusRule: no schema check (set SQS2PG_PROMETHEUS_OPERATOR_CRDS); tests/api/kubernetes.rs checks their content"
  fi

  # The checks must be able to fail: a misspelled field in a container, and in KEDA's spec.
  "$VENV/bin/python" - "$OUT/aws.yaml" "$OUT/bogus-container.yaml" "$OUT/bogus-scaledobject.yaml" <<'PY'
import copy, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for target, kind, path in [(sys.argv[2], "Deployment", ("spec", "template", "spec", "containers", 0)),
                           (sys.argv[3], "ScaledObject", ("spec",))]:
    bad = [copy.deepcopy(d) for d in docs if d["kind"] == kind]
    node = bad[0]
    for step in path:
        node = node[step]
    node["bogusField"] = "x"
    yaml.safe_dump_all(bad, open(target, "w"))
PY
  expect_refused "a bogusField in a container" validate_core "$OUT/bogus-container.yaml"
  expect_refused "a bogusField in the ScaledObject's spec" \
    validate_custom "$DEPLOY/schemas/keda-v2.20.2" "$OUT/bogus-scaledobject.yaml"
  log "both overlays render and validate"
}

case "${1:-}" in
  install) install ;;
  render) render "${2:-}" ;;
  prometheusrule) prometheusrule ;;
  validate) validate ;;
  *)
    sed -n '2,8p' "${BASH_SOURCE[0]}" >&2
    exit 2
    ;;
esac
