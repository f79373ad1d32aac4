#!/usr/bin/env bash
# A real Kubernetes API server for the tests: kube-apiserver + kubectl built once with Go into
# .venv/bin; etcd comes from Debian (etcd-server, in scripts/setup.sh). No kubelet: pods stay
# Pending, which is all pod resolution needs.
# Idempotent: skips the build when both binaries already report the pinned version.
#
# `go install k8s.io/kubernetes/cmd/...` is refused because k8s.io/kubernetes' go.mod replaces
# its staging modules with ./staging paths the module zip lacks; so the build runs in a copy of
# the module source with those replaces dropped in favour of the published k8s.io/* modules of the
# same release, and without go.work or vendor/. Only the two binaries, no cgo, -trimpath: the Go
# build cache survives on the same machine, so a rebuild there is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION=v1.31.0
STAGING_VERSION=v0.31.0 # published k8s.io/* modules of the same release
BIN="$PWD/.venv/bin"
GO=/usr/local/go/bin/go

# Outputs captured first: grep -q closing the pipe early would fail the check under pipefail.
server=$("$BIN/kube-apiserver" --version 2>/dev/null || true)
client=$("$BIN/kubectl" version --client 2>/dev/null || true)
if [ "$server" = "Kubernetes $K8S_VERSION" ] && grep -q "^Client Version: $K8S_VERSION$" <<<"$client"; then
  exit 0
fi

echo "setup: building kube-apiserver and kubectl $K8S_VERSION with Go into .venv/bin (minutes on a fresh machine)"
src=$("$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
if [ ! -f "$src/go.mod" ]; then
  echo "setup: k8s.io/kubernetes@$K8S_VERSION not found in the Go module cache" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cp -r "$src/." "$work/"
chmod -R u+w "$work"
rm -rf "$work/go.work" "$work/go.work.sum" "$work/vendor" "$work/staging"
cd "$work"
edits=()
for mod in $(sed -n 's#^\t\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' go.mod); do
  edits+=("-dropreplace=$mod")
  if grep -q "^[[:space:]]$mod v0.0.0" go.mod; then edits+=("-require=$mod@$STAGING_VERSION"); fi
done
"$GO" mod edit "${edits[@]}"
ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=31 -X $pkg.gitTreeState=clean"
done
start=$(date +%s)
CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN=local \
  "$GO" build -trimpath -ldflags "$ldflags" -o "$BIN/" ./cmd/kube-apiserver ./cmd/kubectl
echo "setup: built kube-apiserver and kubectl in $(($(date +%s) - start)) s"
