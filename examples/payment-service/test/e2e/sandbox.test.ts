// End to end: signed synthetic Stripe events over HTTP to the running
// receiver, which calls the sandbox gateway's internal listener over mutual
// TLS. Every assertion about licenses reads the sandbox Cryptlex's own state
// (`/__sandbox/licenses`, its request journal), not the receiver's answers.
//
// Started by run-tests.sh, which sets PAYMENT_SERVICE_URL, PAYMENT_SERVICE_LOG,
// SANDBOX_URL and STRIPE_WEBHOOK_SECRET.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, describe, it } from "node:test";

import * as stripe from "../../scripts/stripe-events";

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run examples/payment-service/run-tests.sh`);
  return value;
}

const receiverUrl = env("PAYMENT_SERVICE_URL");
const receiverLog = env("PAYMENT_SERVICE_LOG");
const sandboxUrl = env("SANDBOX_URL");
const secret = env("STRIPE_WEBHOOK_SECRET");

const SUBSCRIPTION_KEY = "licensing_gateway_subscription";
const REQUEST_ID_KEY = "licensing_gateway_request_id";
const REVOCATION_KEY = "licensing_gateway_revocation";

interface SandboxLicense {
  id: string;
  key: string;
  productId: string;
  userId: string | null;
  revoked: boolean;
  suspended: boolean;
  allowedActivations: number;
  expiresAt: string | null;
  metadata: { key: string; value: string }[];
}

interface JournalEntry {
  method: string;
  path: string;
  status: number | null;
}

async function sandbox<T>(path: string, init?: RequestInit): Promise<T> {
  const response = await fetch(`${sandboxUrl}${path}`, init);
  assert.ok(response.ok, `${init?.method ?? "GET"} ${path}: ${response.status}`);
  const text = await response.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

function licensesWith(key: string, value: string): Promise<SandboxLicense[]> {
  const query = new URLSearchParams({ metadataKey: key, metadataValue: value });
  return sandbox<SandboxLicense[]>(`/__sandbox/licenses?${query}`);
}

async function allLicenses(): Promise<SandboxLicense[]> {
  return sandbox<SandboxLicense[]>("/__sandbox/licenses");
}

/** Writes the gateway sent to Cryptlex for one license. */
async function writesTo(licenseId: string): Promise<JournalEntry[]> {
  const journal = await sandbox<JournalEntry[]>("/__sandbox/requests");
  return journal.filter((entry) => entry.method !== "GET" && entry.path.startsWith(`/v3/licenses/${licenseId}`));
}

async function userId(email: string): Promise<string> {
  const users = await sandbox<{ id: string }[]>(`/__sandbox/users?${new URLSearchParams({ email })}`);
  assert.equal(users.length, 1, `sandbox user ${email}`);
  return users[0]!.id;
}

function metadata(license: SandboxLicense, key: string): string | undefined {
  return license.metadata.find((entry) => entry.key === key)?.value;
}

const deliver = (evt: Parameters<typeof stripe.deliver>[1], options: { secret?: string } = {}) =>
  stripe.deliver(receiverUrl, evt, { secret: options.secret ?? secret });

/** Delivers until the receiver answers 2xx, waiting as its Retry-After says
 * (what Stripe's redelivery does, faster). */
async function deliverUntilFinal(evt: Parameters<typeof stripe.deliver>[1], maxMs = 30_000) {
  const started = Date.now();
  const answers = [];
  for (;;) {
    const answer = await deliver(evt);
    answers.push(answer);
    if (answer.status < 300) return { answer, answers };
    assert.equal(answer.status, 503, `unexpected ${answer.status}: ${JSON.stringify(answer.body)}`);
    assert.ok(Date.now() - started < maxMs, `still 503 after ${maxMs} ms: ${JSON.stringify(answer.body)}`);
    const waitMs = answer.retryAfter === null ? 1000 : Number(answer.retryAfter) * 1000;
    await new Promise((resolve) => setTimeout(resolve, waitMs));
  }
}

const seenKeys = new Set<string>();
const remember = (licenses: SandboxLicense[]) => licenses.forEach((license) => seenKeys.add(license.key));

describe("the payment service against the sandbox", () => {
  const subscription = stripe.stripeId("sub");
  const base = Math.floor(Date.now() / 1000) - 3600;
  const purchase = stripe.event(
    "checkout.session.completed",
    stripe.checkoutSession({ subscription, email: "demo@example.com" }),
    { created: base },
  );
  let license: SandboxLicense;

  after(() => {
    // The receiver's log names licenses by id only: no key, no secret, no
    // email address, whatever happened above.
    const log = readFileSync(receiverLog, "utf8");
    assert.ok(log.includes('"msg":"gateway call done"'), "the receiver logged its calls");
    assert.ok(!log.includes(secret), "the log contains the webhook secret");
    for (const key of seenKeys) assert.ok(!log.includes(key), "the log contains a license key");
    for (const email of ["demo@example.com", "other@example.com", "nobody@example.com"]) {
      assert.ok(!log.includes(email), `the log contains ${email}`);
    }
  });

  it("refuses a bad signature with 400 and changes nothing", async () => {
    const before = (await allLicenses()).length;
    const answer = await deliver(purchase, { secret: "whsec_not_the_endpoint_secret" });
    assert.equal(answer.status, 400);
    assert.equal((await allLicenses()).length, before);
  });

  it("acknowledges an unhandled event type with 2xx and changes nothing", async () => {
    const before = (await allLicenses()).length;
    const answer = await deliver(stripe.event("customer.created", { id: stripe.stripeId("cus"), object: "customer" }));
    assert.equal(answer.status, 200);
    assert.equal((await allLicenses()).length, before);
  });

  it("purchase: checkout.session.completed issues one license for the subscription", async () => {
    const answer = await deliver(purchase);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    const licenses = await licensesWith(SUBSCRIPTION_KEY, subscription);
    remember(licenses);
    assert.equal(licenses.length, 1);
    license = licenses[0]!;
    assert.equal(metadata(license, REQUEST_ID_KEY), purchase.id);
    assert.equal(license.userId, await userId("demo@example.com"));
    assert.equal(license.revoked, false);
    assert.equal(license.suspended, false);
  });

  it("the same event redelivered: the same license (replayed), still one", async () => {
    const before = (await allLicenses()).length;
    const answer = await deliver(purchase);
    assert.equal(answer.status, 200);
    assert.equal(answer.body.outcome, "replayed");
    const licenses = await licensesWith(SUBSCRIPTION_KEY, subscription);
    assert.deepEqual(licenses.map((l) => l.id), [license.id]);
    assert.equal((await licensesWith(REQUEST_ID_KEY, purchase.id)).length, 1);
    assert.equal((await allLicenses()).length, before);
  });

  it("the subscription's first invoice is acknowledged without a second license", async () => {
    const before = (await allLicenses()).length;
    const first = stripe.invoice({
      subscription,
      billingReason: "subscription_create",
      periodEnd: base + 30 * 86400,
    });
    const answer = await deliver(stripe.event("invoice.paid", first));
    assert.equal(answer.status, 200);
    assert.equal((await allLicenses()).length, before);
    assert.equal((await licensesWith(SUBSCRIPTION_KEY, subscription)).length, 1);
  });

  it("renewal: invoice.paid moves the expiry to the period end, exactly once on redelivery, never back", async () => {
    // Past the expiry the license was issued with (the sandbox product's
    // template: one year), as a yearly plan's renewal would be.
    const periodEnd = Math.floor(Date.now() / 1000) + 400 * 86400;
    const [issued] = await licensesWith(SUBSCRIPTION_KEY, subscription);
    assert.ok(!issued!.expiresAt || Date.parse(issued!.expiresAt) < periodEnd * 1000);
    const renewal = stripe.event("invoice.paid", stripe.invoice({ subscription, periodEnd }));
    const answer = await deliver(renewal);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    let [renewed] = await licensesWith(SUBSCRIPTION_KEY, subscription);
    assert.ok(renewed?.expiresAt, "the license has an expiry");
    assert.equal(Date.parse(renewed.expiresAt), periodEnd * 1000);
    const writes = (await writesTo(license.id)).length;
    assert.ok(writes >= 1, "the renewal wrote to Cryptlex");

    const again = await deliver(renewal);
    assert.equal(again.status, 200);
    assert.equal(again.body.outcome, "replayed");
    [renewed] = await licensesWith(SUBSCRIPTION_KEY, subscription);
    assert.equal(Date.parse(renewed!.expiresAt!), periodEnd * 1000);
    assert.equal((await writesTo(license.id)).length, writes, "the redelivery wrote nothing");

    // An older renewal delivered late (Stripe does not keep order) does not
    // shorten the license.
    const older = stripe.event("invoice.paid", stripe.invoice({ subscription, periodEnd: periodEnd - 30 * 86400 }));
    const late = await deliver(older);
    assert.equal(late.status, 200, JSON.stringify(late.body));
    assert.equal(late.body.outcome, "superseded");
    [renewed] = await licensesWith(SUBSCRIPTION_KEY, subscription);
    assert.equal(Date.parse(renewed!.expiresAt!), periodEnd * 1000, "the expiry did not move back");
  });

  it("pause and resume out of order: the later resume wins over the older pause", async () => {
    const pause = (created: number) =>
      stripe.event("customer.subscription.paused", stripe.subscription(subscription, "paused"), { created });
    const resume = (created: number) =>
      stripe.event("customer.subscription.resumed", stripe.subscription(subscription), { created });

    // In order first, so the pause is known to work at all.
    assert.equal((await deliver(pause(base + 10))).status, 200);
    assert.equal((await licensesWith(SUBSCRIPTION_KEY, subscription))[0]!.suspended, true);

    // Stripe delivers a resume (t+30) before an older pause (t+20).
    const resumed = await deliver(resume(base + 30));
    assert.equal(resumed.status, 200, JSON.stringify(resumed.body));
    assert.equal((await licensesWith(SUBSCRIPTION_KEY, subscription))[0]!.suspended, false);
    const writes = (await writesTo(license.id)).length;

    const late = await deliver(pause(base + 20));
    assert.equal(late.status, 200, JSON.stringify(late.body));
    assert.equal(late.body.outcome, "superseded");
    const [final] = await licensesWith(SUBSCRIPTION_KEY, subscription);
    assert.equal(final!.suspended, false, "the license ends active");
    assert.equal(final!.revoked, false);
    assert.equal((await writesTo(license.id)).length, writes, "the late pause wrote nothing");
  });

  it("refund: charge.refunded revokes the subscription's license, with the reason", async () => {
    const refund = stripe.event(
      "charge.refunded",
      stripe.charge({ paymentIntent: stripe.stripeId("pi"), metadata: { subscription_id: subscription } }),
    );
    const answer = await deliver(refund);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    const [revoked] = await licensesWith(SUBSCRIPTION_KEY, subscription);
    assert.equal(revoked!.revoked, true);
    assert.match(metadata(revoked!, REVOCATION_KEY) ?? "", /refund/i);
    assert.equal((await deliver(refund)).body.outcome, "replayed");
  });

  it("a resume after the revocation changes nothing: revoked stays revoked", async () => {
    const resume = stripe.event("customer.subscription.resumed", stripe.subscription(subscription), {
      created: base + 100,
    });
    const answer = await deliver(resume);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    const [final] = await licensesWith(SUBSCRIPTION_KEY, subscription);
    assert.equal(final!.revoked, true);
  });

  it("one-time purchase, then a dispute: revoked as a chargeback through the PaymentIntent", async () => {
    const paymentIntent = stripe.stripeId("pi");
    const buy = stripe.event(
      "checkout.session.completed",
      stripe.checkoutSession({ paymentIntent, email: "other@example.com" }),
    );
    assert.equal((await deliver(buy)).status, 200);
    const issued = await licensesWith(SUBSCRIPTION_KEY, paymentIntent);
    remember(issued);
    assert.equal(issued.length, 1);
    assert.equal(issued[0]!.userId, await userId("other@example.com"));

    const disputed = await deliver(stripe.event("charge.dispute.created", stripe.dispute(paymentIntent)));
    assert.equal(disputed.status, 200, JSON.stringify(disputed.body));
    const [revoked] = await licensesWith(SUBSCRIPTION_KEY, paymentIntent);
    assert.equal(revoked!.revoked, true);
    assert.match(metadata(revoked!, REVOCATION_KEY) ?? "", /chargeback/i);
  });

  it("cancellation: customer.subscription.deleted revokes every license of the subscription", async () => {
    const other = stripe.stripeId("sub");
    const buy = stripe.event(
      "checkout.session.completed",
      stripe.checkoutSession({ subscription: other, email: "demo@example.com", metadata: { quantity: "2" } }),
    );
    assert.equal((await deliver(buy)).status, 200);
    const issued = await licensesWith(SUBSCRIPTION_KEY, other);
    remember(issued);
    // Two licenses, or one with two activations (the product's configuration).
    assert.ok(
      issued.length === 2 || (issued.length === 1 && issued[0]!.allowedActivations === 2),
      `quantity 2 made ${issued.length} licenses`,
    );

    const ended = await deliver(stripe.event("customer.subscription.deleted", stripe.subscription(other, "canceled")));
    assert.equal(ended.status, 200, JSON.stringify(ended.body));
    const after = await licensesWith(SUBSCRIPTION_KEY, other);
    assert.equal(after.length, issued.length);
    for (const l of after) {
      assert.equal(l.revoked, true);
      assert.match(metadata(l, REVOCATION_KEY) ?? "", /cancel/i);
    }
  });

  it("final refusals are acknowledged: an unknown customer, a refund for no license", async () => {
    const before = (await allLicenses()).length;
    const stranger = await deliver(
      stripe.event("checkout.session.completed", stripe.checkoutSession({ subscription: stripe.stripeId("sub"), email: "nobody@example.com" })),
    );
    assert.equal(stranger.status, 200);
    assert.equal(stranger.body.outcome, "refused");
    assert.equal(stranger.body.code, "NotFound");
    const orphan = await deliver(stripe.event("charge.refunded", stripe.charge({ paymentIntent: stripe.stripeId("pi") })));
    assert.equal(orphan.status, 200);
    assert.equal(orphan.body.outcome, "refused");
    assert.equal(orphan.body.code, "NotFound");
    assert.equal((await allLicenses()).length, before);
  });

  it("a lost answer from Cryptlex: 503 with Retry-After, then the redelivery gets the one license", async () => {
    const sub = stripe.stripeId("sub");
    const buy = stripe.event("checkout.session.completed", stripe.checkoutSession({ subscription: sub }));
    // Cryptlex creates the license but the gateway never sees the answer.
    await sandbox("/__sandbox/faults", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ method: "POST", pathPrefix: "/v3/licenses", times: 1, action: { kind: "resetAfterProcessing" } }),
    });
    try {
      const first = await deliver(buy);
      assert.equal(first.status, 503, JSON.stringify(first.body));
      assert.match(first.retryAfter ?? "", /^\d+$/, "Retry-After from the gateway's RetryInfo");
      const { answer } = await deliverUntilFinal(buy);
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.equal(answer.body.outcome, "replayed", "the license created before is the answer");
    } finally {
      await sandbox("/__sandbox/faults", { method: "DELETE" });
    }
    const licenses = await licensesWith(REQUEST_ID_KEY, buy.id);
    remember(licenses);
    assert.equal(licenses.length, 1, "exactly one license for the event");
  });
});
