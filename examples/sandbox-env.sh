# Sourced by the examples' test scripts: builds (unless GATEWAY_BIN is set)
# and starts `licensing-gateway sandbox` on free ports, reads the addresses
# from its banner, and stops it on exit.
#
#   source examples/sandbox-env.sh
#   start_sandbox              # sets GATEWAY_URL, SANDBOX_URL, SANDBOX_LOG
#
# Environment: GATEWAY_BIN (a prebuilt binary), CARGO_PROFILE (dev|release).

_examples_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
_repo_dir="$(cd "$_examples_dir/.." && pwd)"
_sandbox_pid=""
_sandbox_work=""

_stop_sandbox() {
  if [[ -n "$_sandbox_pid" ]] && kill -0 "$_sandbox_pid" 2>/dev/null; then
    kill -TERM "$_sandbox_pid" 2>/dev/null || true
    wait "$_sandbox_pid" 2>/dev/null || true
  fi
  [[ -n "$_sandbox_work" ]] && rm -rf "$_sandbox_work"
  return 0
}

start_sandbox() {
  if [[ -z "${GATEWAY_BIN:-}" ]]; then
    local profile="${CARGO_PROFILE:-dev}" dir_name
    (cd "$_repo_dir" && cargo build --quiet --profile "$profile" --bin licensing-gateway)
    dir_name="$profile"; [[ "$profile" == dev ]] && dir_name=debug
    GATEWAY_BIN="$_repo_dir/target/$dir_name/licensing-gateway"
  fi
  _sandbox_work="$(mktemp -d)"
  SANDBOX_LOG="$_sandbox_work/gateway.log"
  trap _stop_sandbox EXIT
  # No fixed admin port, so runs never collide.
  LICENSING_GATEWAY__ADMIN__ADDR=127.0.0.1:0 "$GATEWAY_BIN" sandbox --dir "$_sandbox_work/sandbox" --no-rate-limit \
    --public-addr 127.0.0.1:0 --internal-addr 127.0.0.1:0 --cryptlex-addr 127.0.0.1:0 \
    >"$SANDBOX_LOG" 2>&1 &
  _sandbox_pid=$!

  # The banner is printed once every listener is bound.
  GATEWAY_URL=""
  local _
  for _ in $(seq 1 300); do
    GATEWAY_URL="$(sed -n 's/^ *public (gRPC + gRPC-Web) *: *\(http:[^ ]*\).*/\1/p' "$SANDBOX_LOG" | head -n1)"
    [[ -n "$GATEWAY_URL" ]] && break
    if ! kill -0 "$_sandbox_pid" 2>/dev/null; then
      echo "the gateway exited during start-up:" >&2
      cat "$SANDBOX_LOG" >&2
      return 1
    fi
    sleep 0.1
  done
  if [[ -z "$GATEWAY_URL" ]]; then
    echo "the gateway printed no banner within 30 s:" >&2
    cat "$SANDBOX_LOG" >&2
    return 1
  fi
  SANDBOX_URL="$(sed -n 's/^ *sandbox Cryptlex *: *\(http:[^ ]*\).*/\1/p' "$SANDBOX_LOG" | head -n1)"
  export GATEWAY_URL SANDBOX_URL SANDBOX_LOG
  echo "sandbox gateway at $GATEWAY_URL (sandbox Cryptlex $SANDBOX_URL)"
}
