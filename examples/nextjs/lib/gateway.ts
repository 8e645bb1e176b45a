// One place that knows where the gateway is. Everything goes through the
// generated client over gRPC-Web with plain `fetch`; it is only ever called
// on the server (server components, server actions, route handlers), so the
// access token never reaches the browser's JavaScript.
import "server-only";
import { Gateway, type CallOptions } from "@licensing-gateway/client";

export function gateway(): Gateway {
  return new Gateway({
    baseUrl: process.env.GATEWAY_URL ?? "http://127.0.0.1:50051",
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
