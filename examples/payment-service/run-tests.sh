#!/usr/bin/env bash
# Checks and unit-tests the payment service, then runs it end to end: builds
# the gateway, starts it in sandbox mode on free ports, starts the receiver
# against the sandbox's internal listener with the sandbox's payment-service
# certificate, drives it with signed synthetic Stripe events over HTTP and
# checks the licenses in the sandbox; stops both.
#
#   examples/payment-service/run-tests.sh
#
# Environment:
#   GATEWAY_BIN      use this gateway binary instead of building one
#   CARGO_PROFILE    dev (default) or release, when building
#   SKIP_NPM_CI=1    reuse an existing node_modules
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../sandbox-env.sh"

cd "$here"
if [[ "${SKIP_NPM_CI:-}" != 1 || ! -d node_modules ]]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent check-generated
npm run --silent typecheck
npm test

start_sandbox
internal_url="$(sed -n 's/^ *internal (mutual TLS) *: *\(https:[^ ]*\).*/\1/p' "$SANDBOX_LOG" | head -n1)"
config_file="$(sed -n 's/^ *effective configuration *: *\(.*[^ ]\) *$/\1/p' "$SANDBOX_LOG" | head -n1)"
if [[ -z "$internal_url" || -z "$config_file" ]]; then
  echo "the sandbox banner names no internal listener or configuration file:" >&2
  cat "$SANDBOX_LOG" >&2
  exit 1
fi
sandbox_dir="$(dirname "$config_file")"

receiver_work="$(mktemp -d)"
PAYMENT_SERVICE_LOG="$receiver_work/payment-service.log"
# A test secret of Stripe's form; the receiver must never log it.
STRIPE_WEBHOOK_SECRET="whsec_ci_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
receiver_pid=""
stop_all() {
  if [[ -n "$receiver_pid" ]] && kill -0 "$receiver_pid" 2>/dev/null; then
    kill -TERM "$receiver_pid" 2>/dev/null || true
    wait "$receiver_pid" 2>/dev/null || true
  fi
  rm -rf "$receiver_work"
  _stop_sandbox
}
trap stop_all EXIT

# A short call budget, so a lost Cryptlex answer surfaces as 503 within one
# delivery (the test then redelivers, as Stripe would).
STRIPE_WEBHOOK_SECRET="$STRIPE_WEBHOOK_SECRET" \
  LICENSING_GATEWAY_URL="$internal_url" \
  LICENSING_GATEWAY_CERT_DIR="$sandbox_dir" \
  LICENSING_GATEWAY_CALL_BUDGET_MS=3000 \
  HOST=127.0.0.1 PORT=0 \
  node --import tsx src/main.ts >"$PAYMENT_SERVICE_LOG" 2>&1 &
receiver_pid=$!

PAYMENT_SERVICE_URL=""
for _ in $(seq 1 100); do
  PAYMENT_SERVICE_URL="$(sed -n 's/.*"msg":"listening".*"url":"\([^"]*\)".*/\1/p' "$PAYMENT_SERVICE_LOG" | head -n1)"
  [[ -n "$PAYMENT_SERVICE_URL" ]] && break
  if ! kill -0 "$receiver_pid" 2>/dev/null; then
    echo "the payment service exited during start-up:" >&2
    cat "$PAYMENT_SERVICE_LOG" >&2
    exit 1
  fi
  sleep 0.1
done
if [[ -z "$PAYMENT_SERVICE_URL" ]]; then
  echo "the payment service did not start listening within 10 s:" >&2
  cat "$PAYMENT_SERVICE_LOG" >&2
  exit 1
fi
echo "payment service at $PAYMENT_SERVICE_URL (gateway $internal_url, certificates from $sandbox_dir)"
export PAYMENT_SERVICE_URL PAYMENT_SERVICE_LOG STRIPE_WEBHOOK_SECRET

status=0
npm run --silent test:e2e || status=$?
if [[ $status -ne 0 ]]; then
  echo "--- payment service log (last 60 lines) ---" >&2
  tail -n 60 "$PAYMENT_SERVICE_LOG" >&2
  echo "--- gateway log (last 50 lines) ---" >&2
  tail -n 50 "$SANDBOX_LOG" >&2
fi
exit $status
