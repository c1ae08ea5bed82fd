#!/usr/bin/env bash
# Load test of `bertlu serve` beside offline `predict` on the same model, in one run:
#   bench/serve_load.sh MODEL TEXTS [extra `bertlu bench --serve` flags, e.g. --duration 30]
# Starts the server on a free loopback port, runs 1, 16 and 64 closed-loop clients for 2 minutes
# each, then again with 5 % malformed requests, prints the table (Markdown) and stops the server
# with SIGTERM, failing unless it exits 0.
set -euo pipefail
MODEL=${1:?usage: bench/serve_load.sh MODEL TEXTS [flags]}
TEXTS=${2:?usage: bench/serve_load.sh MODEL TEXTS [flags]}
shift 2
BIN=${BERTLU:-target/release/bertlu}
[ -x "$BIN" ] || cargo build --release
PORT=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
LOG=$(mktemp)
"$BIN" serve --model "$MODEL" --addr "127.0.0.1:$PORT" 2>"$LOG" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  grep -q "http://" "$LOG" && break
  kill -0 $SERVER 2>/dev/null || { cat "$LOG"; exit 1; }
  sleep 0.1
done
"$BIN" bench --serve "http://127.0.0.1:$PORT" --data "$TEXTS" --offline-model "$MODEL" "$@"
kill -TERM $SERVER
wait $SERVER
echo "server stopped on SIGTERM with exit 0"
trap - EXIT
