#!/usr/bin/env bash
# Builds the Next.js portal (`next build`), starts it (`next start`) against a
# sandbox gateway and drives every customer flow in headless Chromium
# (scripts/e2e.mjs lists them). A screenshot of each page goes to
# target/ci-artifacts/nextjs-screenshots/; the build and server logs to
# target/ci-artifacts/.
#
#   examples/nextjs/run-e2e.sh
#
# Needs Debian's chromium (apt-get install -y chromium) or CHROMIUM=<path>.
# Environment: GATEWAY_BIN, CARGO_PROFILE (see ../sandbox-env.sh), SKIP_NPM_CI=1.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../sandbox-env.sh"
repo="$(cd "$here/../.." && pwd)"
export ARTIFACTS="${ARTIFACTS:-$repo/target/ci-artifacts}"
export SCREENSHOTS="$ARTIFACTS/nextjs-screenshots"
mkdir -p "$ARTIFACTS"
rm -rf "$SCREENSHOTS" "$ARTIFACTS"/nextjs-*.png
mkdir -p "$SCREENSHOTS"

cd "$here"
if [[ "${SKIP_NPM_CI:-}" != 1 || ! -d node_modules ]]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
export NEXT_TELEMETRY_DISABLED=1
start=$(date +%s)
node_modules/.bin/next build >"$ARTIFACTS/nextjs-build.log" 2>&1 || { cat "$ARTIFACTS/nextjs-build.log"; exit 1; }
echo "next build: $(( $(date +%s) - start )) s"

# The e2e expires access tokens behind the gateway's back (as a revocation in
# Cryptlex's dashboard would, which no webhook announces): answers the gateway
# holds for them must age out within the script's wait, so the cache keeps
# answers for seconds here instead of minutes.
#
# The sandbox runs without Cryptlex's rate limit (--no-rate-limit), so the
# gateway's budget that keeps under it is lifted as well: the robot clicks
# through some twenty pages, one session, in seconds, where the default 50
# calls per 5 s (12 reads per session) would shed reads a person never meets.
# For the same reason the per-network allowance for upstream calls (15 per 5 s
# from one client network) is lifted: every page the robot opens comes from
# one loopback address, and on a quiet machine the license page, its phone
# view and the deactivation that follows land in one window and exceed it
# (the gateway then refuses the deactivation with RESOURCE_EXHAUSTED, as it
# should; tests/api covers that allowance).
export LICENSING_GATEWAY__CRYPTLEX__BUDGET__MAX_REQUESTS=1000
export LICENSING_GATEWAY__CRYPTLEX__BUDGET__PER_SESSION_READS=200
export LICENSING_GATEWAY__LIMITS__UPSTREAM_CALLS_PER_ADDRESS=200
LICENSING_GATEWAY__CACHE__FRESH_FOR=1s LICENSING_GATEWAY__CACHE__MAX_AGE=3s start_sandbox
port="$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
export APP_URL="http://127.0.0.1:$port"
# The key that seals pending sign-ins and reset links (lib/sealed.ts): a fresh
# random one per run, as a deployment would keep its own in a secret store.
PORTAL_SECRET="$(node -e 'console.log(require("crypto").randomBytes(32).toString("base64url"))')"
export PORTAL_SECRET
# Not through npx: its wrapper would not pass our SIGTERM on to the server.
node_modules/.bin/next start -H 127.0.0.1 -p "$port" >"$ARTIFACTS/nextjs-server.log" 2>&1 &
next_pid=$!
trap 'kill -TERM "$next_pid" 2>/dev/null || true; wait "$next_pid" 2>/dev/null || true; _stop_sandbox' EXIT
for _ in $(seq 1 100); do
  curl -fsS -o /dev/null "$APP_URL/" 2>/dev/null && break
  sleep 0.2
done

status=0
node scripts/e2e.mjs || status=$?
if [[ $status -ne 0 ]]; then
  echo "--- next server log ---" >&2; tail -n 40 "$ARTIFACTS/nextjs-server.log" >&2
  echo "--- gateway log ---" >&2; tail -n 40 "$SANDBOX_LOG" >&2
fi
exit $status
