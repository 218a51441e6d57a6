#!/usr/bin/env bash
# Installs what the tests need and runs every test: formatting, lints, unit and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> installing test tools"
# eth-account: an independent wallet implementation that signs the sign-in test messages.
python3 -c "import eth_account" 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check eth-account
# prometheus-client: the official Prometheus parser that reads both /metrics endpoints in the tests.
python3 -c "import prometheus_client" 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check prometheus-client
# opentelemetry-proto: decodes the real OTLP export requests in the loopback trace receiver.
python3 -c "import opentelemetry.proto" 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check opentelemetry-proto

echo "==> checking formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "==> building the binaries the end-to-end tests start"
cargo build --workspace --bins --quiet

echo "==> running every test"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
