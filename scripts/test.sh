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
# schemathesis: drives every operation of /openapi.json against a running gateway (tests/tests/openapi.rs).
command -v schemathesis >/dev/null 2>&1 \
  || python3 -m pip install --quiet --disable-pip-version-check schemathesis
# opentelemetry-proto: decodes the real OTLP export requests in the loopback trace receiver.
python3 -c "import opentelemetry.proto" 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check opentelemetry-proto
# The Python SDK (editable) with pytest: its tests drive the real binaries (sdk/python/tests).
python3 -c "import flowork, httpx, pytest" 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check -e "sdk/python[test]"

# From Debian: Chromium for the GUI tests (driven by playwright-core, which never downloads a browser), and nginx
# for the canary proxy example in deploy/.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# PostgreSQL (server and psql) and Redis: the end-to-end tests run a second time on the fleet store.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && command -v psql >/dev/null 2>&1 || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing+=(nginx)
# curl: a real HTTP/2-over-TLS client for the gateway's TLS test (tests/tests/tls.rs).
command -v curl >/dev/null 2>&1 || missing+=(curl)
# systemd-analyze verifies the units in deploy/systemd, buildah reads deploy/container/Containerfile
# (tests/tests/deploy.rs).
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
# promtool (from Debian's prometheus) checks and unit-tests the rules in deploy/prometheus (tests/tests/slo.rs).
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The GUI's npm packages, exactly as locked.
(cd gui && npm ci --no-audit --no-fund --loglevel=error)
# The contract tools (tests/tests/openapi_clients.rs), pinned in tests/contract: Redocly CLI, openapi-typescript,
# openapi-fetch and TypeScript from npm; openapi-spec-validator and openapi-python-client in their own virtual
# environment (the generator pins an httpx older than the SDK's).
(cd tests/contract && npm ci --no-audit --no-fund --loglevel=error)
if ! cmp -s tests/contract/requirements.txt tests/contract/.venv/requirements.txt 2>/dev/null; then
  rm -rf tests/contract/.venv
  python3 -m venv tests/contract/.venv
  tests/contract/.venv/bin/pip install --quiet --disable-pip-version-check -r tests/contract/requirements.txt
  cp tests/contract/requirements.txt tests/contract/.venv/requirements.txt
fi

echo "==> scanning the tree and its history for secrets"
python3 scripts/secret-scan.py .

echo "==> checking formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "==> checking that TLS is rustls only: no OpenSSL, native-tls or aws-lc in the dependency tree"
if cargo tree --workspace --edges normal,build --prefix none --quiet \
  | grep -E '^(openssl|openssl-sys|native-tls|aws-lc-rs|aws-lc-sys) '; then
  echo "a crate above pulls in a TLS stack other than rustls with ring" >&2
  exit 1
fi

echo "==> checking that cargo install works for both binaries (debug profile, sharing the build)"
install_root="$(mktemp -d)"
cargo install --quiet --locked --debug --path gateway --root "$install_root" --target-dir "${CARGO_TARGET_DIR:-target}"
cargo install --quiet --locked --debug --path engine --root "$install_root" --target-dir "${CARGO_TARGET_DIR:-target}"
"$install_root/bin/flowork-gateway" --version && "$install_root/bin/flowork-engine" --version
rm -rf "$install_root"

echo "==> building the binaries the end-to-end tests start"
cargo build --workspace --bins --quiet

echo "==> building the GUI"
(cd gui && npm run --silent build)

echo "==> running every test"
status=0
if cargo nextest --version >/dev/null 2>&1; then
  # The fleet and migrate-store tests need PostgreSQL (and Redis): they run in the PostgreSQL pass below.
  cargo nextest run --workspace --no-fail-fast -E 'not (binary(fleet) | binary(migrate_store))' || status=$?
else
  cargo test --workspace --no-fail-fast -- --skip a_fleet_of_three_gateways --skip a_populated_data_directory_moves || status=$?
fi
# The Python SDK's Client and Worker against the real gateway binary (a gateway per test, workers as processes).
echo "==> running the Python SDK's tests"
# This checkout's SDK first: an editable install made from another checkout must not stand in for it.
PYTHONPATH="$PWD/sdk/python/src${PYTHONPATH:+:$PYTHONPATH}" python3 -m pytest sdk/python -q -p no:cacheprovider || status=$?
# The TypeScript SDK's Client and Worker the same way (node:test, type-checked with tsc --strict first).
echo "==> running the TypeScript SDK's tests"
(cd sdk/typescript && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build && npm test) || status=$?
# The same end-to-end tests, and the store conformance suite (the store, fairness and model tests, which hold both
# drivers to the same promises), on the PostgreSQL store, against a throw-away server (initdb into a temporary folder,
# stopped at the end) and a Redis server for the fleet test (three gateways, two engines). Left out: what only the
# SQLite data directory has (backup/restore files, a full disk and a damaged file under the shards) and the
# loadtest smoke test (it starts its own gateway on a data directory).
# Selected with --workspace and a filter (not `-p flowork-tests`), so cargo keeps the workspace's feature set and
# reuses every build above instead of compiling the dependencies a second time.
echo "==> running the end-to-end tests again on PostgreSQL"
FLOWORK_TEST_STORE=postgres "${CARGO_TARGET_DIR:-target}/debug/with-services" --redis -- \
  cargo nextest run --workspace --no-fail-fast \
  -E '(package(flowork-tests) & not (binary(backup) | binary(storage) | binary(loadtest)))
       | (package(flowork-gateway) & (binary(store) | binary(fair) | binary(model) | binary(operations)))' \
  || status=$?
# Fuzzing: briefly with cargo-fuzz where a nightly toolchain is installed; the stable run over the corpus
# (gateway/tests/fuzz_corpus.rs) is part of the tests above either way.
if cargo +nightly --version >/dev/null 2>&1 && cargo +nightly fuzz --version >/dev/null 2>&1; then
  for target in job_body job_headers engine_claim engine_heartbeat engine_finish engine_finish_batch siwe_message; do
    (cd fuzz && cargo +nightly fuzz run "$target" corpus/"$target" -- -max_total_time=15) || status=$?
  done
else
  echo "==> no nightly toolchain with cargo-fuzz here: the fuzz targets ran over their corpus on stable only"
fi
# The GUI against the real gateway: socket.io-client and headless Chromium (screenshots in gui/test-artifacts/).
(cd gui && npm test) || status=$?
exit $status
