#!/usr/bin/env bash
# Installs the pinned kustomize with the Go toolchain, once, under $VI_STATE_DIR/tools
# (default .state/tools), and prints the path of the binary on stdout.
#
# Why from source: kustomize is not packaged by any registry this project may use, and a
# prebuilt release binary is a download from outside the registries. `go install` of a
# pinned module version goes through the Go module proxy, checked against go.sum's
# checksum database like any Go module. Go 1.26 builds v5.8.1 as is (GOTOOLCHAIN=local:
# never a toolchain download). The binary lands in a versioned folder, so a bump
# reinstalls; an install goes to a temporary folder first, so a concurrent or
# interrupted run never leaves half a binary behind.
set -euo pipefail

KUSTOMIZE_VERSION=v5.8.1
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
state="${VI_STATE_DIR:-.state}"
case "$state" in /*) ;; *) state="$repo/$state" ;; esac
target="$state/tools/kustomize-$KUSTOMIZE_VERSION"

if [ -x "$target/kustomize" ]; then
    echo "$target/kustomize"
    exit 0
fi

go_bin="$(command -v go || true)"
[ -n "$go_bin" ] || { [ -x /usr/local/go/bin/go ] && go_bin=/usr/local/go/bin/go; }
if [ -z "$go_bin" ]; then
    echo "install-kustomize: error: Go is not installed (looked on PATH and in /usr/local/go/bin);" \
        "kustomize $KUSTOMIZE_VERSION is built with 'go install'. Install Go 1.22 or newer." >&2
    exit 1
fi

mkdir -p "$state/tools"
scratch="$(mktemp -d "$state/tools/.kustomize-install.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
echo "install-kustomize: building sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION with $go_bin" >&2
GOBIN="$scratch/bin" GOTOOLCHAIN=local GOFLAGS=-modcacherw \
    "$go_bin" install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" >&2
if ! mv -T "$scratch/bin" "$target" 2>/dev/null && [ ! -x "$target/kustomize" ]; then
    echo "install-kustomize: error: could not move the binary to $target" >&2
    exit 1
fi
echo "$target/kustomize"
