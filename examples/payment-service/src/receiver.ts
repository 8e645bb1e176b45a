// The HTTP side: Stripe posts events here.
//
// Answers:
// - 400 when the `Stripe-Signature` header is missing or wrong (or too old):
//   the only 4xx for an event, since the request did not come from Stripe
//   (or was altered) and no redelivery of it can succeed;
// - 2xx when the outcome is final: done, replayed, superseded, not handled,
//   and also a final refusal by the gateway (logged as an error), because
//   Stripe retries anything else for up to three days a request that cannot
//   succeed, and a person has to act on it anyway;
// - 503 when the outcome is not final, with `Retry-After` from the
//   gateway's RetryInfo when it sent one: Stripe redelivers the same event
//   (same id, so the same request id) later. (Stripe keeps its own retry
//   schedule; the header helps any proxy or queue in between.)
// - 500 for a bug in this service (an exception): also redelivered.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import Stripe from "stripe";

import type { Config } from "./config";
import { planFor, type MappingOptions } from "./events";
import { execute, type IssuanceClient } from "./gateway";
import type { Logger } from "./log";

export interface ReceiverOptions {
  config: Pick<Config, "webhookPath" | "webhookSecret" | "maxBodyBytes" | "callBudgetMs"> & MappingOptions;
  client: IssuanceClient;
  log: Logger;
}

/** The signature's allowed age, Stripe's default (replayed old requests are
 * refused). */
const SIGNATURE_TOLERANCE_SECONDS = 300;

export function createReceiver(options: ReceiverOptions): Server {
  const server = createServer((request, response) => {
    handle(options, request, response).catch((error: unknown) => {
      options.log.error("unexpected failure handling a request", { error: errorText(error) });
      if (!response.headersSent) reply(response, 500, { error: "internal error" });
      else response.destroy();
    });
  });
  // Stripe's requests are small; do not let a slow client hold a socket.
  server.requestTimeout = 30_000;
  server.headersTimeout = 10_000;
  return server;
}

async function handle(options: ReceiverOptions, request: IncomingMessage, response: ServerResponse): Promise<void> {
  const { config, log } = options;
  const path = (request.url ?? "/").split("?")[0];
  if (request.method === "GET" && path === "/healthz") {
    reply(response, 200, { status: "ok" });
    return;
  }
  if (path !== config.webhookPath) {
    reply(response, 404, { error: "not found" });
    return;
  }
  if (request.method !== "POST") {
    response.setHeader("Allow", "POST");
    reply(response, 405, { error: "method not allowed" });
    return;
  }

  const body = await readBody(request, config.maxBodyBytes);
  if (body === undefined) {
    reply(response, 413, { error: "body too large" });
    return;
  }

  // The signature is over the exact bytes received: verify before parsing.
  let event: Stripe.Event;
  try {
    event = Stripe.webhooks.constructEvent(
      body,
      request.headers["stripe-signature"] ?? "",
      config.webhookSecret,
      SIGNATURE_TOLERANCE_SECONDS,
    );
  } catch (error) {
    // Neither the header nor the body is logged; Stripe's message says
    // which check failed without either.
    log.warn("refused a request with a missing or invalid Stripe-Signature", {
      why: error instanceof Stripe.errors.StripeSignatureVerificationError ? error.message : errorText(error),
    });
    reply(response, 400, { error: "invalid signature" });
    return;
  }

  const context = { eventId: event.id, eventType: event.type, livemode: event.livemode };
  const plan = planFor(event, config);
  if (plan.action === "acknowledge") {
    log.info("acknowledged without action", { ...context, why: plan.why });
    reply(response, 200, { received: true, outcome: "ignored" });
    return;
  }
  if (plan.action === "cannot-act") {
    log.error("cannot act on this event; acknowledged so Stripe stops redelivering it", {
      ...context,
      problem: plan.problem,
    });
    reply(response, 200, { received: true, outcome: "cannot-act" });
    return;
  }

  const call = { ...context, rpc: plan.call.rpc, subject: plan.subject };
  const outcome = await execute(options.client, plan.call, {
    budgetMs: config.callBudgetMs,
    onRetry: (failure, waitMs) =>
      log.warn("gateway call not final; retrying with the same request id", {
        ...call,
        code: failure.code,
        reason: failure.reason,
        waitMs,
      }),
  });
  switch (outcome.kind) {
    case "done": {
      const result = outcome.replayed ? "replayed" : outcome.superseded ? "superseded" : "applied";
      log.info("gateway call done", {
        ...call,
        result,
        attempts: outcome.attempts,
        licenses: outcome.licenses,
      });
      reply(response, 200, { received: true, outcome: result });
      return;
    }
    case "refused":
      // Final: the same request can never succeed (unknown customer, a
      // product this service may not license, a reused event id, no license
      // for the subscription...). Acknowledge, or Stripe would retry it for
      // days; someone has to fix the cause and, if needed, act by hand.
      log.error("gateway refused the call for good; acknowledged, needs a person", {
        ...call,
        code: outcome.code,
        reason: outcome.reason,
        message: outcome.message,
        attempts: outcome.attempts,
      });
      reply(response, 200, { received: true, outcome: "refused", code: outcome.code, reason: outcome.reason });
      return;
    case "retry": {
      const retryAfterSeconds =
        outcome.retryAfterMs === undefined ? undefined : Math.max(1, Math.ceil(outcome.retryAfterMs / 1000));
      log.warn("gateway call not final; answering 503 so Stripe redelivers", {
        ...call,
        code: outcome.code,
        reason: outcome.reason,
        message: outcome.message,
        attempts: outcome.attempts,
        retryAfterSeconds,
      });
      if (retryAfterSeconds !== undefined) response.setHeader("Retry-After", String(retryAfterSeconds));
      reply(response, 503, { received: true, outcome: "retry", code: outcome.code, reason: outcome.reason });
      return;
    }
  }
}

/** The raw body, or undefined when it is over `limit` bytes. */
async function readBody(request: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  const declared = Number(request.headers["content-length"]);
  if (Number.isFinite(declared) && declared > limit) {
    request.resume();
    return undefined;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    const buffer = chunk as Buffer;
    size += buffer.length;
    if (size > limit) {
      request.resume();
      return undefined;
    }
    chunks.push(buffer);
  }
  return Buffer.concat(chunks);
}

function reply(response: ServerResponse, status: number, body: Record<string, unknown>): void {
  const text = JSON.stringify(body);
  response.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
  });
  response.end(text);
}

function errorText(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}
