#!/usr/bin/env bash
# Builds Flowork and runs it locally on embedded defaults: a gateway on 127.0.0.1, SQLite shards under the
# data directory, one local engine. Prints where to go and a ready token. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_DIR="${FLOWORK_DATA_DIR:-./data}"
LISTEN="${FLOWORK_LISTEN:-127.0.0.1:8080}"
WORKERS="${FLOWORK_WORKERS:-4}"
URL="http://${LISTEN}"
BIN="${CARGO_TARGET_DIR:-target}/release"

echo "==> building (release)"
cargo build --release --bins --quiet
GUI_ARGS=()
if command -v npm >/dev/null 2>&1; then
  echo "==> building the GUI"
  (cd gui && { [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error; } && npm run --silent build)
  GUI_ARGS=(--gui-dir gui/dist)
else
  echo "==> npm not found: starting without the GUI (install Node 20 with npm to get it at /)"
fi

mkdir -p "$DATA_DIR"
TOKEN_FILE="$DATA_DIR/local-engine.token"
if [ ! -s "$TOKEN_FILE" ]; then
  "$BIN/flowork-gateway" engine add local --owner local --token-file "$TOKEN_FILE" --data-dir "$DATA_DIR"
fi

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "==> stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

"$BIN/flowork-gateway" serve --listen "$LISTEN" --data-dir "$DATA_DIR" ${GUI_ARGS[@]+"${GUI_ARGS[@]}"} \
  --log-format pretty 2>"$DATA_DIR/gateway.log" &
pids+=($!)
for _ in $(seq 1 100); do
  if curl -fsS "$URL/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "${pids[0]}" 2>/dev/null; then
    echo "the gateway did not start; see $DATA_DIR/gateway.log:" >&2
    tail -n 20 "$DATA_DIR/gateway.log" >&2
    exit 1
  fi
  sleep 0.1
done

"$BIN/flowork-engine" --gateway "$URL" --engine-id local --token-file "$TOKEN_FILE" --workers "$WORKERS" \
  --log-format pretty 2>"$DATA_DIR/engine.log" &
pids+=($!)

TOKEN="$("$BIN/flowork-gateway" token mint --user local --ttl 24h --data-dir "$DATA_DIR")"
GUI_LINE="  GUI       not built (no npm)"
if [ ${#GUI_ARGS[@]} -gt 0 ]; then
  GUI_LINE="  GUI       $URL/           (open it in a browser; sign in with a development key, then let that
                                   address use the engine: $BIN/flowork-gateway engine allow local 0x…
                                   --data-dir $DATA_DIR; the GUI shows the exact command)"
fi
cat <<MSG

Flowork is running.
$GUI_LINE
  gateway   $URL            (data in $DATA_DIR, logs in $DATA_DIR/gateway.log)
  engine    local, $WORKERS workers       (log in $DATA_DIR/engine.log)

An access token for user "local", valid 24 h:
  export FLOWORK_TOKEN=$TOKEN

Submit a job and read it back:
  curl -s -X POST $URL/jobs -H "Authorization: Bearer \$FLOWORK_TOKEN" \\
       -H "Idempotency-Key: hello-1" -H "Content-Type: application/json" \\
       -d '{"engine": "local", "kind": "echo", "payload": {"hello": "world"}}'
  curl -s $URL/jobs -H "Authorization: Bearer \$FLOWORK_TOKEN"

Press Ctrl-C to stop.
MSG
wait -n "${pids[@]}" || true
