#!/usr/bin/env bash
# Runs Runplane's whole test suite: installs the wasm target if needed, checks the
# services the tests need, then runs every test. Used by README and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "==> installing the wasm32-wasip2 target"
    rustup target add wasm32-wasip2
fi

if ! command -v python3 >/dev/null; then
    echo "error: python3 is required (canonical JSON is tested against Python's json module)" >&2
    exit 1
fi

echo "==> cargo test --workspace"
cargo test --workspace --no-fail-fast 2>&1
