#!/usr/bin/env bash
# All set-up on a fresh Debian 12 machine: system packages, .venv, Apache Kafka jars.
# Idempotent and quiet when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(python3-venv python3-bpfcc openjdk-17-jre-headless maven prometheus stress-ng postgresql-15
  etcd-server openssl)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# eBPF through bcc compiles against kernel headers and needs tracefs (root only).
if [ "$(id -u)" -eq 0 ]; then
  scripts/kernel-headers.sh
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv (system site packages, so Debian's bcc imports)"
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  echo "setup: installing joulestream and its Python dependencies into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e ".[dev]"
  touch "$stamp"
fi

# kustomize renders deploy/kubernetes in the tests; Debian has none, the Go module proxy does.
KUSTOMIZE_VERSION=v5.7.1  # 5.8 needs Go >= 1.27
if ! .venv/bin/kustomize version 2>/dev/null | grep -q "$KUSTOMIZE_VERSION"; then
  echo "setup: building kustomize $KUSTOMIZE_VERSION with Go into .venv/bin"
  PATH="$PATH:/usr/local/go/bin" GOBIN="$PWD/.venv/bin" \
    go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
fi

# helm renders deploy/helm/joulestream in the tests (lint, template); built like kustomize.
HELM_VERSION=v3.22.0  # needs Go >= 1.26.0
# go install leaves `helm version` at "v3.22"; the module version is in the build info.
if ! PATH="$PATH:/usr/local/go/bin" go version -m .venv/bin/helm 2>/dev/null | grep -q "helm.sh/helm/v3[[:space:]]*$HELM_VERSION"; then
  echo "setup: building helm $HELM_VERSION with Go into .venv/bin"
  PATH="$PATH:/usr/local/go/bin" GOBIN="$PWD/.venv/bin" \
    go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi

# kube-apiserver and kubectl for the tests against a real API server (built once, cached).
scripts/kubernetes.sh

echo "setup: fetching Apache Kafka jars through Maven (cached after the first run)"
.venv/bin/joulestream kafka fetch
