// What the test files share: waiting out the limits a reader's sandbox
// enforces, and decoding an expected failure.
import assert from "node:assert/strict";

import { GatewayError } from "../src/gateway";

/** Refusals for load or pace, not for what the call asked. */
const BUSY = new Set([
  "UPSTREAM_RATE_LIMITED",
  "TOO_MANY_REQUESTS",
  "UPSTREAM_BUDGET_EXHAUSTED",
  "OVERLOADED",
  "TOO_MANY_ATTEMPTS",
]);

/**
 * Runs a call, waiting out the limits a reader's sandbox enforces instead of
 * failing on them: Cryptlex's 50 calls per 5 s, the gateway's own budget and
 * per-session reads, and its sign-in limit per client address (30 a minute;
 * every test signs in from the same address, and scripts/check-readme runs
 * these tests right after the README's own calls).
 */
export async function patiently<T>(call: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 90_000;
  for (;;) {
    try {
      return await call();
    } catch (error) {
      if (!(error instanceof GatewayError) || !BUSY.has(error.reason ?? "") || Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, Math.max(500, error.retryAfterMs ?? 1_000)));
    }
  }
}

/** Runs a call that must fail (patiently) and returns its decoded error. */
export async function failure(call: () => Promise<unknown>): Promise<GatewayError> {
  try {
    await patiently(call);
  } catch (error) {
    assert.ok(error instanceof GatewayError, `expected GatewayError, got ${String(error)}`);
    return error;
  }
  assert.fail("the call should have failed");
}
