#!/usr/bin/env bash
# Makes .envtest/, the folder KUBEBUILDER_ASSETS names for the real-API tests (controller-runtime's
# envtest layout): kube-apiserver from ../shared/kube-apiserver/ and Debian's etcd (etcd-server).
# Without ../shared the real-API tests skip, saying why; under CI that is an error.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=../shared/kube-apiserver
if [ ! -f "$shared/kube-apiserver.zst" ]; then
  echo "envtest: no $shared/kube-apiserver.zst: the real-API tests will be skipped" >&2
  [ -z "${CI:-}" ] || exit 1
  exit 0
fi
mkdir -p .envtest
expected=$(cut -d' ' -f1 "$shared/kube-apiserver.sha256")
if [ ! -x .envtest/kube-apiserver ] || [ "$(sha256sum .envtest/kube-apiserver | cut -d' ' -f1)" != "$expected" ]; then
  zstd -dqf "$shared/kube-apiserver.zst" -o .envtest/kube-apiserver
  chmod +x .envtest/kube-apiserver
fi
[ "$(sha256sum .envtest/kube-apiserver | cut -d' ' -f1)" = "$expected" ] || { echo "envtest: checksum mismatch" >&2; exit 1; }
ln -sf "$(command -v etcd)" .envtest/etcd
if command -v kubectl >/dev/null; then ln -sf "$(command -v kubectl)" .envtest/kubectl; fi
