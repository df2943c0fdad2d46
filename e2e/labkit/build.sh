#!/usr/bin/env bash
# Build the lab's binaries from Go modules into $TWINHULL_LAB_CACHE/<versions>/bin.
# Idempotent: a binary that exists is not rebuilt. Needs Go >= 1.26 and the Go module proxy.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.14}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
GATEWAY_API_VERSION=${GATEWAY_API_VERSION:-v1.6.3}
# Prometheus 3.16 (module versions v0.3XX.Y are releases 3.XX.Y). Debian's prometheus is
# built without Kubernetes service discovery, which the members' Prometheus needs; this
# one has only that discovery (and the static and file ones every build has).
PROMETHEUS_VERSION=${PROMETHEUS_VERSION:-v0.316.0}
# prometheus-operator's CRDs (PodMonitor, PrometheusRule), installed on the members to
# check what the chart renders for them. v0.90.1 is the newest the module proxy serves.
PROMETHEUS_OPERATOR_VERSION=${PROMETHEUS_OPERATOR_VERSION:-v0.90.1}
# toxiproxy: the TCP proxy in front of each member's API server, through which twinhull
# reaches the members, so a partition or a slow network can be made (e2e/lab partition).
TOXIPROXY_VERSION=${TOXIPROXY_VERSION:-v2.5.0}
CACHE=${TWINHULL_LAB_CACHE:-$HOME/.cache/twinhull/lab}
KEY="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_gw-${GATEWAY_API_VERSION}"
BIN="$CACHE/$KEY/bin"
SRC="$CACHE/$KEY/src"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$BIN" "$SRC"

say() { printf '[lab build] %s\n' "$*" >&2; }

lock() {  # one build at a time per cache: a second caller waits for the first
  exec 9>"$CACHE/.build.lock"
  flock -n 9 || { say "another build is running; waiting for it"; flock 9; }
}

need() {  # need NAME...: true if any named binary is missing
  local b; for b in "$@"; do [ -x "$BIN/$b" ] || return 0; done; return 1
}

build_k8s() {
  need kube-apiserver kube-controller-manager kube-scheduler kubectl || return 0
  local dir="$SRC/k8s" kmod
  mkdir -p "$dir"
  kmod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  local staging="v0.${K8S_VERSION#v1.}"  # staging modules are tagged v0.<minor>.<patch>
  {
    echo "module twinhull.local/labbuild/k8s"
    echo
    echo "go 1.26.0"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    grep -E '=> ./staging/' "$kmod/go.mod" | awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } > "$dir/go.mod"
  local git_minor ld
  git_minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$git_minor -X k8s.io/component-base/version.gitTreeState=clean"
  local c
  for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [ -x "$BIN/$c" ] && continue
    say "building $c $K8S_VERSION (first build takes several minutes)"
    (cd "$dir" && go build -trimpath -ldflags "$ld" -o "$BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c") && mv "$BIN/$c.tmp" "$BIN/$c"
  done
}

build_etcd() {
  need etcd || return 0
  local dir="$SRC/etcd"
  mkdir -p "$dir"
  printf 'module twinhull.local/labbuild/etcd\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > "$dir/go.mod"
  say "building etcd $ETCD_VERSION"
  (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3) && mv "$BIN/etcd.tmp" "$BIN/etcd"
}

build_prometheus() {
  # Its own cache folder: a new Prometheus does not rebuild Kubernetes.
  local out="$CACHE/prometheus-$PROMETHEUS_VERSION"
  [ -x "$out/prometheus" ] && return 0
  local dir="$SRC/prometheus"
  mkdir -p "$dir" "$out"
  printf 'module twinhull.local/labbuild/prometheus\n\ngo 1.26.7\n\nrequire github.com/prometheus/prometheus %s\n' "$PROMETHEUS_VERSION" > "$dir/go.mod"
  say "building prometheus $PROMETHEUS_VERSION with Kubernetes discovery"
  (cd "$dir" && go build -trimpath -tags remove_all_sd,enable_kubernetes_sd -ldflags "-s -w" -o "$out/prometheus.tmp" github.com/prometheus/prometheus/cmd/prometheus) && mv "$out/prometheus.tmp" "$out/prometheus"
}

build_toxiproxy() {
  # Its own cache folder, like Prometheus: adding it does not rebuild Kubernetes.
  local out="$CACHE/toxiproxy-$TOXIPROXY_VERSION"
  [ -x "$out/toxiproxy" ] && return 0
  local dir="$SRC/toxiproxy"
  mkdir -p "$dir" "$out"
  printf 'module twinhull.local/labbuild/toxiproxy\n\ngo 1.26.0\n\nrequire github.com/Shopify/toxiproxy/v2 %s\n' "$TOXIPROXY_VERSION" > "$dir/go.mod"
  say "building toxiproxy $TOXIPROXY_VERSION"
  (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$out/toxiproxy.tmp" github.com/Shopify/toxiproxy/v2/cmd/server) && mv "$out/toxiproxy.tmp" "$out/toxiproxy"
}

build_kwok() {
  need kwok || return 0
  local dir="$SRC/kwok"
  mkdir -p "$dir"
  printf 'module twinhull.local/labbuild/kwok\n\ngo 1.26.0\n\nrequire sigs.k8s.io/kwok %s\n' "$KWOK_VERSION" > "$dir/go.mod"
  say "building kwok $KWOK_VERSION"
  (cd "$dir" && go build -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" -o "$BIN/kwok.tmp" sigs.k8s.io/kwok/cmd/kwok) && mv "$BIN/kwok.tmp" "$BIN/kwok"
}

fetch_assets() {
  # Gateway API CRDs and KWOK's stage manifests, copied out of their module zips.
  local share="$CACHE/$KEY/share"
  [ -d "$share/gateway-api" ] && [ -d "$share/kwok-stage" ] && [ -d "$share/prometheus-operator" ] && return 0
  mkdir -p "$share"
  local gw kw po
  gw=$(cd "$SRC" && go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  kw=$(cd "$SRC" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  po=$(cd "$SRC" && go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  rm -rf "$share/gateway-api" "$share/kwok-stage" "$share/prometheus-operator"
  cp -r "$gw/config/crd/standard" "$share/gateway-api"
  cp -r "$kw/kustomize/stage" "$share/kwok-stage"
  mkdir -p "$share/prometheus-operator"
  cp "$po/example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml" \
     "$po/example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml" "$share/prometheus-operator/"
  chmod -R u+w "$share"
}

case "${1:-all}" in
  all) lock; build_etcd; build_kwok; build_prometheus; build_toxiproxy; build_k8s; fetch_assets; echo "$CACHE/$KEY" ;;
  dir) echo "$CACHE/$KEY" ;;
  prometheus) echo "$CACHE/prometheus-$PROMETHEUS_VERSION/prometheus" ;;
  toxiproxy) echo "$CACHE/toxiproxy-$TOXIPROXY_VERSION/toxiproxy" ;;
  *) echo "usage: build.sh [all|dir|prometheus|toxiproxy]" >&2; exit 2 ;;
esac
