#!/usr/bin/env bash
# Fuzzes the services API from its own OpenAPI document with schemathesis
# (PyPI): a real master and the services framework on loopback, no agent.
# Fails on any 5xx, any answer that does not match the document (status
# code, content type, headers, schema), a 405 without Allow, or a daemon
# that died or panicked. Usage: schemathesis.sh <agora binary>
set -euo pipefail
bin=$(realpath "$1")
venv="${SCHEMATHESIS_VENV:-${CARGO_TARGET_DIR:-/tmp}/schemathesis-venv}"
if [ ! -x "$venv/bin/schemathesis" ]; then
  echo "installing schemathesis into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis>=4.3,<5'
fi
"$venv/bin/schemathesis" --version

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
mport=$(port)
sport=$(port)
"$bin" master --insecure --listen "127.0.0.1:$mport" --data-dir "$work/master" >"$work/master.log" 2>&1 &
pids+=($!)
"$bin" services --insecure --master "127.0.0.1:$mport" --listen "127.0.0.1:$sport" --data-dir "$work/services" >"$work/services.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$sport") 2>/dev/null; then break; fi
  sleep 0.1
done

status=0
# /v2/events and /v1/endpoints/watch are endless streams, and /v1/services
# long-polls (an index at or above the current version is answered after
# `wait`, 30 s by default: beyond the request timeout); they are tested in
# frameworks/services/tests/endpoints.rs. Everything else is fuzzed with every
# check but positive_data_acceptance: a definition valid for the schema may
# still break rules a schema cannot say (a cmd or an image, a health check's
# portIndex within the app's ports, ...), and is answered with a documented
# 422 naming them.
timeout 170 "$venv/bin/schemathesis" run "http://127.0.0.1:$sport/openapi.json" \
  --checks all --exclude-checks positive_data_acceptance --exclude-path /v2/events \
  --exclude-path /v1/endpoints/watch --exclude-path /v1/services \
  --exclude-path '/v1/services/{appId}' \
  --max-examples 50 --seed 7 --request-timeout 10 --no-color || status=$?

for p in "${pids[@]}"; do
  if ! kill -0 "$p" 2>/dev/null; then
    echo "a daemon died during the fuzzing" >&2
    status=1
  fi
done
if grep -n "panicked" "$work/services.log" "$work/master.log"; then
  echo "a daemon panicked during the fuzzing" >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "--- services log (last 40 lines)" >&2
  tail -n 40 "$work/services.log" >&2
fi
exit "$status"
