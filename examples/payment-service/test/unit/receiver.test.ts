// The receiver over real HTTP against an in-process fake IssuanceService
// (connect's router transport): signatures, the HTTP answer for every kind
// of gateway outcome, in-place retries, and what the log may contain.

import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import { after, before, beforeEach, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";

import { ErrorInfoSchema, RetryInfoSchema } from "../../src/gen/google/rpc/error_details_pb";
import {
  IssuanceService,
  type IssueLicenseRequest,
  type IssueLicenseResponse,
  type RevokeLicenseRequest,
  type SuspendLicenseRequest,
} from "../../src/gen/licensing/v1/issuance_service_pb";
import { IssuedLicenseSchema } from "../../src/gen/licensing/v1/types_pb";
import { createIssuanceClient } from "../../src/gateway";
import { createLogger } from "../../src/log";
import { createReceiver } from "../../src/receiver";
import * as stripe from "../../scripts/stripe-events";

const LICENSE_KEY = "SECRET-LICENSE-KEY-0000-1111";

/** What the fake gateway does next, per RPC; each call takes the next one. */
type Step = (request: unknown) => unknown;
const script: Record<string, Step[]> = {};
const received: { rpc: string; request: unknown }[] = [];

function next(rpc: string, request: unknown): unknown {
  received.push({ rpc, request });
  const step = script[rpc]?.shift();
  if (!step) throw new ConnectError("not scripted", Code.Unimplemented);
  return step(request);
}

function gatewayError(code: Code, reason: string, retryDelaySeconds?: number): ConnectError {
  const details = [
    { desc: ErrorInfoSchema, value: { domain: "licensing-gateway", reason } },
    ...(retryDelaySeconds === undefined
      ? []
      : [{ desc: RetryInfoSchema, value: { retryDelay: { seconds: BigInt(retryDelaySeconds), nanos: 0 } } }]),
  ];
  return new ConnectError(`fake ${reason}`, code, undefined, details);
}

function license(id = "lic-1") {
  return create(IssuedLicenseSchema, {
    id,
    key: LICENSE_KEY,
    productId: "prod-1",
    userId: "user-1",
    subscriptionId: "sub_1",
  });
}

const transport = createRouterTransport(({ service }) => {
  service(IssuanceService, {
    issueLicense: (request: IssueLicenseRequest) => next("IssueLicense", request) as IssueLicenseResponse,
    renewLicense: (request) => next("RenewLicense", request) as never,
    suspendLicense: (request: SuspendLicenseRequest) => next("SuspendLicense", request) as never,
    resumeLicense: (request) => next("ResumeLicense", request) as never,
    revokeLicense: (request: RevokeLicenseRequest) => next("RevokeLicense", request) as never,
    setSeats: (request) => next("SetSeats", request) as never,
  });
});

const logLines: string[] = [];
const server = createReceiver({
  config: {
    webhookPath: "/stripe/webhook",
    webhookSecret: stripe.TEST_WEBHOOK_SECRET,
    maxBodyBytes: 64 * 1024,
    callBudgetMs: 2000,
  },
  client: createClient(IssuanceService, transport),
  log: createLogger((line) => logLines.push(line), "debug"),
});
let url = "";

before(async () => {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/stripe/webhook`;
});
after(() => new Promise<void>((resolve) => server.close(() => resolve())));
beforeEach(() => {
  for (const key of Object.keys(script)) delete script[key];
  received.length = 0;
});

function purchase(email = "buyer@example.com") {
  return stripe.event(
    "checkout.session.completed",
    stripe.checkoutSession({ subscription: "sub_1", email }),
  );
}

describe("signatures", () => {
  it("refuses a wrong secret, a missing header and a tampered body with 400, calling nothing", async () => {
    const evt = purchase();
    assert.equal((await stripe.deliver(url, evt, { secret: "whsec_someone_else" })).status, 400);

    const { body } = stripe.signed(evt);
    const missing = await fetch(url, { method: "POST", body, headers: { "content-type": "application/json" } });
    assert.equal(missing.status, 400);

    const { signature } = stripe.signed(evt);
    const tampered = await fetch(url, {
      method: "POST",
      body: body.replace("buyer@example.com", "thief@example.com"),
      headers: { "content-type": "application/json", "stripe-signature": signature },
    });
    assert.equal(tampered.status, 400);

    const old = Math.floor(Date.now() / 1000) - 3600;
    const { default: Stripe } = await import("stripe");
    const stale = Stripe.webhooks.generateTestHeaderString({ payload: body, secret: stripe.TEST_WEBHOOK_SECRET, timestamp: old });
    assert.equal((await stripe.deliver(url, evt, { signature: stale })).status, 400);
    assert.deepEqual(received, []);
  });

  it("answers 404 elsewhere and 405 for other methods", async () => {
    assert.equal((await fetch(url.replace("/stripe/webhook", "/other"), { method: "POST" })).status, 404);
    assert.equal((await fetch(url)).status, 405);
    assert.equal((await fetch(url.replace("/stripe/webhook", "/healthz"))).status, 200);
  });

  it("refuses an oversized body with 413 before verifying", async () => {
    const big = await fetch(url, { method: "POST", body: "x".repeat(65 * 1024) });
    assert.equal(big.status, 413);
  });
});

describe("outcomes", () => {
  it("acknowledges an unhandled event without calling the gateway", async () => {
    const answer = await stripe.deliver(url, stripe.event("customer.created", { id: "cus_1", object: "customer" }));
    assert.equal(answer.status, 200);
    assert.equal(answer.body.outcome, "ignored");
    assert.deepEqual(received, []);
  });

  it("issues: 200 applied, then 200 replayed for the redelivery", async () => {
    script.IssueLicense = [
      () => ({ license: license(), licenses: [license()], replayed: false }),
      () => ({ license: license(), licenses: [license()], replayed: true }),
    ];
    const evt = purchase();
    const first = await stripe.deliver(url, evt);
    assert.equal(first.status, 200);
    assert.equal(first.body.outcome, "applied");
    const again = await stripe.deliver(url, evt);
    assert.equal(again.body.outcome, "replayed");
    assert.equal(received.length, 2);
    for (const { request } of received) assert.equal((request as IssueLicenseRequest).requestId, evt.id);
  });

  it("acknowledges a late suspend as superseded", async () => {
    script.SuspendLicense = [() => ({ licenses: [{ license: license(), superseded: true }], superseded: true })];
    const answer = await stripe.deliver(url, stripe.event("customer.subscription.paused", stripe.subscription("sub_1")));
    assert.equal(answer.status, 200);
    assert.equal(answer.body.outcome, "superseded");
  });

  it("calls a renewal that changed no license superseded (a date earlier than the license had)", async () => {
    script.RenewLicense = [() => ({ licenses: [{ license: license(), superseded: true }], replayed: false })];
    const renewal = stripe.invoice({ subscription: "sub_1", periodEnd: Math.floor(Date.now() / 1000) + 86400 });
    const answer = await stripe.deliver(url, stripe.event("invoice.paid", renewal));
    assert.equal(answer.status, 200);
    assert.equal(answer.body.outcome, "superseded");
  });

  for (const [code, reason] of [
    [Code.NotFound, "NOT_FOUND"],
    [Code.PermissionDenied, "PRODUCT_NOT_ALLOWED"],
    [Code.FailedPrecondition, "REQUEST_ID_REUSED"],
    [Code.InvalidArgument, "INVALID_ARGUMENT"],
  ] as const) {
    it(`acknowledges ${Code[code]} (final) with 200 and logs it as an error`, async () => {
      script.RevokeLicense = [
        () => {
          throw gatewayError(code, reason);
        },
      ];
      const answer = await stripe.deliver(url, stripe.event("charge.refunded", stripe.charge({ paymentIntent: "pi_1" })));
      assert.equal(answer.status, 200);
      assert.equal(answer.body.outcome, "refused");
      assert.equal(answer.body.reason, reason);
      assert.equal(received.length, 1, "a final refusal is not retried");
      const logged = logLines.map((line) => JSON.parse(line)).filter((line) => line.level === "error");
      assert.ok(logged.some((line) => line.reason === reason && line.rpc === "RevokeLicense"));
    });
  }

  it("answers 503 with Retry-After from RetryInfo when the wait exceeds the budget", async () => {
    script.IssueLicense = [
      () => {
        throw gatewayError(Code.Unavailable, "UPSTREAM_RATE_LIMITED", 30);
      },
    ];
    const answer = await stripe.deliver(url, purchase());
    assert.equal(answer.status, 503);
    assert.equal(answer.retryAfter, "30");
    assert.equal(answer.body.reason, "UPSTREAM_RATE_LIMITED");
    assert.equal(received.length, 1);
  });

  it("retries ABORTED in place with the same request id, then answers 200", async () => {
    script.IssueLicense = [
      () => {
        throw gatewayError(Code.Aborted, "REQUEST_IN_PROGRESS", 0);
      },
      () => ({ license: license(), licenses: [license()], replayed: true }),
    ];
    const evt = purchase();
    const answer = await stripe.deliver(url, evt);
    assert.equal(answer.status, 200);
    assert.equal(answer.body.outcome, "replayed");
    assert.deepEqual(
      received.map(({ request }) => (request as IssueLicenseRequest).requestId),
      [evt.id, evt.id],
    );
  });

  it("keeps retrying DEADLINE_EXCEEDED and UNAVAILABLE without RetryInfo until the budget is spent, then 503 without Retry-After", async () => {
    const failing = () => {
      throw gatewayError(Code.DeadlineExceeded, "DEADLINE_EXCEEDED");
    };
    script.RenewLicense = Array.from({ length: 50 }, () => failing);
    const renewal = stripe.invoice({ subscription: "sub_1", periodEnd: Math.floor(Date.now() / 1000) + 86400 });
    const answer = await stripe.deliver(url, stripe.event("invoice.paid", renewal));
    assert.equal(answer.status, 503);
    assert.equal(answer.retryAfter, null);
    assert.ok(received.length > 1, "retried in place");
  });

  it("answers 503 (not 2xx) for codes outside the contract, such as UNIMPLEMENTED, without retrying in place", async () => {
    const answer = await stripe.deliver(url, stripe.event("customer.subscription.resumed", stripe.subscription("sub_1")));
    assert.equal(answer.status, 503);
    assert.equal(answer.body.code, "Unimplemented");
    assert.equal(received.length, 1);
  });

  it("answers 503 when the gateway cannot be reached", async () => {
    // A real transport to a closed port: a connection error, not final.
    const unreachable = createReceiver({
      config: { webhookPath: "/w", webhookSecret: stripe.TEST_WEBHOOK_SECRET, maxBodyBytes: 65536, callBudgetMs: 300 },
      client: createIssuanceClient({
        gatewayUrl: "https://127.0.0.1:1",
        gatewayServerName: "localhost",
        tls: { ca: Buffer.alloc(0), cert: Buffer.alloc(0), key: Buffer.alloc(0) },
      }),
      log: createLogger(() => {}),
    });
    await new Promise<void>((resolve) => unreachable.listen(0, "127.0.0.1", resolve));
    try {
      const port = (unreachable.address() as AddressInfo).port;
      const answer = await stripe.deliver(`http://127.0.0.1:${port}/w`, purchase());
      assert.equal(answer.status, 503);
    } finally {
      await new Promise<void>((resolve) => unreachable.close(() => resolve()));
    }
  });
});

describe("logs", () => {
  it("never contain the webhook secret, a license key, the customer's email or the signature", async () => {
    script.IssueLicense = [() => ({ license: license(), licenses: [license()], replayed: false })];
    const evt = purchase("private.person@example.com");
    const { signature } = stripe.signed(evt);
    await stripe.deliver(url, evt);
    await stripe.deliver(url, evt, { secret: "whsec_wrong_secret_value" });
    const all = logLines.join("\n");
    assert.ok(logLines.length > 0);
    for (const secret of [stripe.TEST_WEBHOOK_SECRET, "whsec_wrong_secret_value", LICENSE_KEY, "private.person@example.com"]) {
      assert.ok(!all.includes(secret), `the log contains ${secret}`);
    }
    const v1 = /v1=([0-9a-f]+)/.exec(signature)?.[1];
    assert.ok(v1 && !all.includes(v1), "the log contains the signature");
    assert.ok(all.includes("lic-1"), "the log names the license by id");
  });
});
