#!/usr/bin/env bash
# Builds the gateway, starts it in sandbox mode on free ports, runs the
# TypeScript client tests against it over gRPC-Web (HTTP/1.1), and stops it.
#
#   examples/ts-client/run-tests.sh
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

start_sandbox
status=0
npm test || status=$?
if [[ $status -ne 0 ]]; then
  echo "--- gateway log (last 50 lines) ---" >&2
  tail -n 50 "$SANDBOX_LOG" >&2
fi
exit $status
