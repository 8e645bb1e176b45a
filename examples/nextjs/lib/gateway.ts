// One place that knows where the gateway is. Everything goes through the
// generated client over the Connect protocol (binary) with plain `fetch`; it
// is only ever called on the server (server components, server actions,
// route handlers), so the access token never reaches the browser's
// JavaScript. The reads (GetProfile, ListMyLicenses, GetLicense,
// ListActivations, ListReleases) go out as GET. `GATEWAY_PROTOCOL=grpc-web`
// switches to gRPC-Web, for a proxy in between that only lets gRPC-Web by.
import "server-only";
import { Gateway, toGatewayError, type CallOptions } from "@licensing-gateway/client";

export function gateway(): Gateway {
  return new Gateway({
    baseUrl: process.env.GATEWAY_URL ?? "http://127.0.0.1:50051",
    protocol: process.env.GATEWAY_PROTOCOL === "grpc-web" ? "grpc-web" : "connect",
    timeoutMs: 5_000,
  });
}

/**
 * Passes the browser's address on to the gateway for the calls it throttles
 * per client address (`Login`, `SignUp`, `RequestPasswordReset`,
 * `ResetPassword`).
 *
 * Every call reaches the gateway from this server, so without it the
 * gateway's per-address limits would count all users as one. The
 * `x-forwarded-for` header is forwarded unchanged: its right-most entry was
 * written by the proxy in front of this app (the ingress controller, or the
 * hosting platform), and that is the entry the gateway reads
 * (`limits.client_address_header = "x-forwarded-for"`,
 * `trusted_proxy_hops = 1`); whatever the browser wrote to its left is
 * ignored. This app adds no entry, so it is not a hop. Run it only behind
 * such a proxy: reached directly, the browser would write that entry itself.
 * Without the header the gateway counts the caller as "unknown", one
 * allowance shared by all such callers, rather than trusting anything.
 */
export function clientAddress(headers: Headers): CallOptions {
  const forwardedFor = headers.get("x-forwarded-for");
  return forwardedFor === null ? {} : { headers: { "x-forwarded-for": forwardedFor } };
}

/** Refusals that only ask the caller to slow down for a moment. */
const BUSY = new Set(["UPSTREAM_BUDGET_EXHAUSTED", "TOO_MANY_REQUESTS", "UPSTREAM_RATE_LIMITED", "OVERLOADED"]);
/** The longest a page waits before its one retry. */
const MAX_RETRY_WAIT_MS = 2_000;

/**
 * A page's read, retried once when the gateway asks to wait a moment (its
 * upstream budget, or the reads one session may start per window): someone
 * clicking quickly through the portal sees the page a second later instead
 * of a "busy" banner. Longer waits, and every other failure, are thrown.
 */
export async function read<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    const failure = toGatewayError(error);
    const wait = failure.retryAfterMs ?? 1_000;
    if (!BUSY.has(failure.reason ?? "") || wait > MAX_RETRY_WAIT_MS) throw failure;
    await new Promise((resolve) => setTimeout(resolve, wait));
    return call();
  }
}
