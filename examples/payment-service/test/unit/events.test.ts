// Every mapping from a Stripe event to a gateway call (no network).

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { timestampMs } from "@bufbuild/protobuf/wkt";

import { planFor, type GatewayCall, type Plan } from "../../src/events";
import { RevocationReason } from "../../src/gen/licensing/v1/issuance_service_pb";
import * as stripe from "../../scripts/stripe-events";

function call(plan: Plan): GatewayCall {
  if (plan.action !== "call") assert.fail(`expected a call, got ${JSON.stringify(plan)}`);
  return plan.call;
}

describe("checkout.session.completed", () => {
  it("issues a license for the subscription, with the event id as request id", () => {
    const session = stripe.checkoutSession({ subscription: "sub_1", paymentIntent: "pi_1", email: "a@example.com" });
    const evt = stripe.event("checkout.session.completed", session, { id: "evt_checkout_1" });
    const issued = call(planFor(evt));
    assert.equal(issued.rpc, "IssueLicense");
    assert.deepEqual(issued.request, {
      requestId: "evt_checkout_1",
      user: { case: "userEmail", value: "a@example.com" },
      productId: "",
      subscriptionId: "sub_1",
      quantity: 1,
    });
  });

  it("uses the PaymentIntent for a one-time purchase, then the session id", () => {
    const oneTime = stripe.event("checkout.session.completed", stripe.checkoutSession({ paymentIntent: "pi_2" }));
    assert.equal((call(planFor(oneTime)).request as { subscriptionId: string }).subscriptionId, "pi_2");
    const session = stripe.checkoutSession({ paymentStatus: "no_payment_required" });
    const free = stripe.event("checkout.session.completed", session);
    assert.equal((call(planFor(free)).request as { subscriptionId: string }).subscriptionId, session.id);
  });

  it("takes an expanded subscription object's id", () => {
    const session = { ...stripe.checkoutSession(), subscription: { id: "sub_expanded", object: "subscription" } };
    const plan = planFor(stripe.event("checkout.session.completed", session));
    assert.equal((call(plan).request as { subscriptionId: string }).subscriptionId, "sub_expanded");
  });

  it("reads product and quantity from the session metadata, else the configured default and 1", () => {
    const session = stripe.checkoutSession({
      subscription: "sub_3",
      metadata: { product_id: "prod-from-metadata", quantity: "5" },
    });
    const request = call(planFor(stripe.event("checkout.session.completed", session), { defaultProductId: "default" }))
      .request as { productId: string; quantity: number };
    assert.equal(request.productId, "prod-from-metadata");
    assert.equal(request.quantity, 5);
    const plain = stripe.event("checkout.session.completed", stripe.checkoutSession({ subscription: "sub_4" }));
    const fallback = call(planFor(plain, { defaultProductId: "default" })).request as { productId: string };
    assert.equal(fallback.productId, "default");
  });

  it("cannot act without an email or with a malformed quantity (acknowledged, logged)", () => {
    const noEmail = stripe.event("checkout.session.completed", stripe.checkoutSession({ email: null }));
    assert.equal(planFor(noEmail).action, "cannot-act");
    const badQuantity = stripe.event(
      "checkout.session.completed",
      stripe.checkoutSession({ metadata: { quantity: "two" } }),
    );
    assert.equal(planFor(badQuantity).action, "cannot-act");
  });

  it("waits for the money: an unpaid session is acknowledged, async_payment_succeeded issues", () => {
    const session = stripe.checkoutSession({ paymentIntent: "pi_5", paymentStatus: "unpaid" });
    assert.equal(planFor(stripe.event("checkout.session.completed", session)).action, "acknowledge");
    const paid = { ...session, payment_status: "paid" };
    assert.equal(call(planFor(stripe.event("checkout.session.async_payment_succeeded", paid))).rpc, "IssueLicense");
  });

  it("ignores setup sessions", () => {
    const session = stripe.checkoutSession({ mode: "setup", paymentStatus: "no_payment_required" });
    assert.equal(planFor(stripe.event("checkout.session.completed", session)).action, "acknowledge");
  });
});

describe("invoice.paid", () => {
  const periodEnd = 1_900_000_000;

  it("acknowledges the first invoice of a subscription (its license comes from checkout)", () => {
    const first = stripe.invoice({ subscription: "sub_1", billingReason: "subscription_create", periodEnd });
    assert.deepEqual(planFor(stripe.event("invoice.paid", first)).action, "acknowledge");
  });

  it("renews the subscription to its line's period end, not invoice.period_end", () => {
    const renewal = stripe.invoice({ subscription: "sub_1", periodEnd });
    const renew = call(planFor(stripe.event("invoice.paid", renewal, { id: "evt_renew" })));
    assert.equal(renew.rpc, "RenewLicense");
    const request = renew.request as { requestId: string; target: unknown; expiresAt: Parameters<typeof timestampMs>[0] };
    assert.equal(request.requestId, "evt_renew");
    assert.deepEqual(request.target, { case: "subscriptionId", value: "sub_1" });
    assert.equal(timestampMs(request.expiresAt), periodEnd * 1000);
  });

  it("reads the pre-2025 invoice shape too, and adds the grace period", () => {
    const legacy = stripe.invoice({ subscription: "sub_old", periodEnd, legacyShape: true });
    const renew = call(planFor(stripe.event("invoice.paid", legacy), { renewalGraceSeconds: 3 * 86400 }));
    const request = renew.request as { target: unknown; expiresAt: Parameters<typeof timestampMs>[0] };
    assert.deepEqual(request.target, { case: "subscriptionId", value: "sub_old" });
    assert.equal(timestampMs(request.expiresAt), (periodEnd + 3 * 86400) * 1000);
  });

  it("skips proration lines", () => {
    const renewal = stripe.invoice({ subscription: "sub_1", periodEnd, billingReason: "subscription_update" });
    const lines = (renewal.lines as { data: Record<string, unknown>[] }).data;
    lines.push({
      object: "line_item",
      parent: {
        type: "subscription_item_details",
        subscription_item_details: { subscription: "sub_1", proration: true },
      },
      period: { start: periodEnd, end: periodEnd + 999_999 },
    });
    const request = call(planFor(stripe.event("invoice.paid", renewal))).request as {
      expiresAt: Parameters<typeof timestampMs>[0];
    };
    assert.equal(timestampMs(request.expiresAt), periodEnd * 1000);
  });

  it("acknowledges an invoice without a subscription; cannot act without a period", () => {
    const oneOff = { ...stripe.invoice({ subscription: "x", periodEnd }), parent: null, billing_reason: "manual" };
    assert.equal(planFor(stripe.event("invoice.paid", oneOff)).action, "acknowledge");
    const noLines = { ...stripe.invoice({ subscription: "sub_1", periodEnd }), lines: { data: [] } };
    assert.equal(planFor(stripe.event("invoice.paid", noLines)).action, "cannot-act");
  });
});

describe("subscription pause, resume, end", () => {
  it("suspends and resumes with the event's created time", () => {
    const paused = call(
      planFor(stripe.event("customer.subscription.paused", stripe.subscription("sub_9", "paused"), { created: 1000 })),
    );
    assert.equal(paused.rpc, "SuspendLicense");
    const request = paused.request as { target: unknown; eventTime: Parameters<typeof timestampMs>[0] };
    assert.deepEqual(request.target, { case: "subscriptionId", value: "sub_9" });
    assert.equal(timestampMs(request.eventTime), 1_000_000);
    const resumed = call(planFor(stripe.event("customer.subscription.resumed", stripe.subscription("sub_9"))));
    assert.equal(resumed.rpc, "ResumeLicense");
  });

  it("revokes on deletion, as a cancellation", () => {
    const ended = call(planFor(stripe.event("customer.subscription.deleted", stripe.subscription("sub_9", "canceled"))));
    assert.equal(ended.rpc, "RevokeLicense");
    const request = ended.request as { target: unknown; reason: RevocationReason };
    assert.deepEqual(request.target, { case: "subscriptionId", value: "sub_9" });
    assert.equal(request.reason, RevocationReason.CANCELLATION);
  });
});

describe("refunds and disputes", () => {
  it("revokes a fully refunded charge by its metadata subscription_id, else its PaymentIntent", () => {
    const byMetadata = call(
      planFor(
        stripe.event(
          "charge.refunded",
          stripe.charge({ paymentIntent: "pi_1", metadata: { subscription_id: "sub_from_metadata" } }),
        ),
      ),
    );
    assert.equal(byMetadata.rpc, "RevokeLicense");
    const request = byMetadata.request as { target: unknown; reason: RevocationReason; note: string };
    assert.deepEqual(request.target, { case: "subscriptionId", value: "sub_from_metadata" });
    assert.equal(request.reason, RevocationReason.REFUND);
    assert.match(request.note, /^stripe charge ch_/);
    const byIntent = call(planFor(stripe.event("charge.refunded", stripe.charge({ paymentIntent: "pi_7" }))));
    assert.deepEqual((byIntent.request as { target: unknown }).target, { case: "subscriptionId", value: "pi_7" });
  });

  it("keeps the license on a partial refund; cannot act without a reference", () => {
    const partial = stripe.event("charge.refunded", stripe.charge({ paymentIntent: "pi_1", refunded: false }));
    assert.equal(planFor(partial).action, "acknowledge");
    assert.equal(planFor(stripe.event("charge.refunded", stripe.charge())).action, "cannot-act");
  });

  it("revokes a disputed payment as a chargeback through the dispute's PaymentIntent", () => {
    const disputed = call(planFor(stripe.event("charge.dispute.created", stripe.dispute("pi_8"))));
    const request = disputed.request as { target: unknown; reason: RevocationReason; note: string };
    assert.deepEqual(request.target, { case: "subscriptionId", value: "pi_8" });
    assert.equal(request.reason, RevocationReason.CHARGEBACK);
    assert.match(request.note, /^stripe dispute dp_.* \(fraudulent\)$/);
  });
});

it("acknowledges event types it does not handle", () => {
  const plan = planFor(stripe.event("customer.created", { id: "cus_1", object: "customer" }));
  assert.deepEqual(plan, { action: "acknowledge", why: "event type not handled" });
});
