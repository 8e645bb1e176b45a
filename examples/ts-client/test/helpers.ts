// What the test files share: the transports the suite runs over, waiting
// out the limits a reader's sandbox enforces, and decoding an expected failure.
import assert from "node:assert/strict";

import { GatewayError, type GatewayOptions } from "../src/gateway";

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

/** One way of reaching the gateway that the suite runs over. */
export interface Transport {
  /** A short name for test titles and `GATEWAY_TRANSPORTS`. */
  id: "connect-binary" | "connect-json" | "grpc-web" | "grpc-web-json";
  name: string;
  options: Pick<GatewayOptions, "protocol" | "useBinaryFormat">;
  /** The request content type of a POST. */
  requestType: string;
  /** The response content type of a successful call. */
  responseType: RegExp;
  /** Whether the side-effect-free calls go out as GET. */
  usesGet: boolean;
}

export const ALL_TRANSPORTS: Transport[] = [
  {
    id: "connect-binary",
    name: "Connect, binary (the default)",
    options: { protocol: "connect", useBinaryFormat: true },
    requestType: "application/proto",
    responseType: /^application\/proto$/,
    usesGet: true,
  },
  {
    id: "connect-json",
    name: "Connect, JSON",
    options: { protocol: "connect", useBinaryFormat: false },
    requestType: "application/json",
    responseType: /^application\/json$/,
    usesGet: true,
  },
  {
    id: "grpc-web",
    name: "gRPC-Web, binary",
    options: { protocol: "grpc-web" },
    requestType: "application/grpc-web+proto",
    responseType: /^application\/grpc-web(\+proto)?$/,
    usesGet: false,
  },
  {
    id: "grpc-web-json",
    name: "gRPC-Web, JSON",
    options: { protocol: "grpc-web", useBinaryFormat: false },
    requestType: "application/grpc-web+json",
    responseType: /^application\/grpc-web\+json$/,
    usesGet: false,
  },
];

/**
 * The transports the suite runs over: all four, or those named in
 * `GATEWAY_TRANSPORTS` (comma-separated ids, e.g. `connect-json,grpc-web`).
 */
export const TRANSPORTS: Transport[] = (() => {
  const wanted = process.env.GATEWAY_TRANSPORTS?.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (wanted === undefined || wanted.length === 0) return ALL_TRANSPORTS;
  const unknown = wanted.filter((id) => !ALL_TRANSPORTS.some((t) => t.id === id));
  if (unknown.length > 0) throw new Error(`unknown GATEWAY_TRANSPORTS ${unknown.join(", ")}`);
  return ALL_TRANSPORTS.filter((t) => wanted.includes(t.id));
})();
