// From a verified Stripe event to at most one licensing-gateway call.
//
// Pure: no I/O, so every mapping is unit-tested (test/unit/events.test.ts).
//
// The request id of every call is the Stripe event id: Stripe redelivers an
// event with the same id, so a redelivery is answered from the gateway's
// ledger (`replayed`) instead of acting twice. Do not build request ids from
// anything else (a timestamp, a counter, a random id): that is how
// duplicates are made.
//
// The payload's shape depends on the API version of the webhook endpoint
// (set in Stripe's dashboard). The readers below accept both the current
// shape and the one before Stripe's 2025-03-31 ("basil") changes, which
// moved `invoice.subscription` to `invoice.parent.subscription_details`.

import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type Stripe from "stripe";

import {
  RevocationReason,
  type IssueLicenseRequestSchema,
  type RenewLicenseRequestSchema,
  type ResumeLicenseRequestSchema,
  type RevokeLicenseRequestSchema,
  type SuspendLicenseRequestSchema,
} from "./gen/licensing/v1/issuance_service_pb";

/** One IssuanceService call, ready to send. */
export type GatewayCall =
  | { rpc: "IssueLicense"; request: MessageInitShape<typeof IssueLicenseRequestSchema> }
  | { rpc: "RenewLicense"; request: MessageInitShape<typeof RenewLicenseRequestSchema> }
  | { rpc: "SuspendLicense"; request: MessageInitShape<typeof SuspendLicenseRequestSchema> }
  | { rpc: "ResumeLicense"; request: MessageInitShape<typeof ResumeLicenseRequestSchema> }
  | { rpc: "RevokeLicense"; request: MessageInitShape<typeof RevokeLicenseRequestSchema> };

/** What to do with an event. */
export type Plan =
  /** Call the gateway; `subject` (a subscription or payment reference) is
   * for the log. */
  | { action: "call"; call: GatewayCall; subject: string }
  /** Nothing to do, by design (an event type this service does not handle,
   * the first invoice of a subscription, ...): acknowledge. */
  | { action: "acknowledge"; why: string }
  /** The event should have led to a call but cannot, whatever happens later
   * (for example no customer email): acknowledge, since a redelivery cannot
   * fix it, and log it as an error for a person to handle. */
  | { action: "cannot-act"; problem: string };

export interface MappingOptions {
  /** The product when the session's metadata names none; undefined leaves
   * it to the gateway's default product. */
  defaultProductId?: string;
  /** Seconds added to a renewal's period end. */
  renewalGraceSeconds?: number;
}

/** The Checkout Session metadata keys this service reads. */
export const PRODUCT_METADATA_KEY = "product_id";
export const QUANTITY_METADATA_KEY = "quantity";
/** The charge metadata key naming the subscription a charge paid for. */
export const SUBSCRIPTION_METADATA_KEY = "subscription_id";

/** The event types this service acts on. */
export const HANDLED_EVENT_TYPES = [
  "checkout.session.completed",
  "checkout.session.async_payment_succeeded",
  "invoice.paid",
  "customer.subscription.paused",
  "customer.subscription.resumed",
  "customer.subscription.deleted",
  "charge.refunded",
  "charge.dispute.created",
] as const;

type Obj = Record<string, unknown>;

function obj(value: unknown): Obj | undefined {
  return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Obj) : undefined;
}

function str(value: unknown): string | undefined {
  return typeof value === "string" && value.length > 0 ? value : undefined;
}

/** A Stripe reference field: an id, or the expanded object carrying one. */
function idOf(value: unknown): string | undefined {
  return str(value) ?? str(obj(value)?.id);
}

function metadataOf(value: Obj): Obj {
  return obj(value.metadata) ?? {};
}

/** Maps a verified event to a plan. */
export function planFor(event: Stripe.Event, options: MappingOptions = {}): Plan {
  const object = obj(event.data?.object);
  if (!object) return { action: "cannot-act", problem: "the event carries no data.object" };
  switch (event.type) {
    case "checkout.session.completed":
    case "checkout.session.async_payment_succeeded":
      return checkoutCompleted(event, object, options);
    case "invoice.paid":
      return invoicePaid(event, object, options);
    case "customer.subscription.paused":
      return pauseOrResume(event, object, "SuspendLicense");
    case "customer.subscription.resumed":
      return pauseOrResume(event, object, "ResumeLicense");
    case "customer.subscription.deleted":
      return subscriptionDeleted(event, object);
    case "charge.refunded":
      return chargeRefunded(event, object);
    case "charge.dispute.created":
      return disputeCreated(event, object);
    default:
      return { action: "acknowledge", why: "event type not handled" };
  }
}

// checkout.session.completed → IssueLicense.
//
// The reference stored with the license is what the later events name:
// the subscription for `mode: subscription`, else the PaymentIntent (what a
// refund's or dispute's charge points to), else the session itself.
function checkoutCompleted(event: Stripe.Event, session: Obj, options: MappingOptions): Plan {
  if (session.mode === "setup") return { action: "acknowledge", why: "setup session: nothing was bought" };
  if (session.payment_status === "unpaid") {
    // Delayed payment methods (bank debits): the money is not there yet.
    // checkout.session.async_payment_succeeded follows when it is.
    return { action: "acknowledge", why: "payment not completed yet; waiting for async_payment_succeeded" };
  }
  const email = str(obj(session.customer_details)?.email);
  if (!email) return { action: "cannot-act", problem: "the session has no customer_details.email" };
  const subscriptionId = idOf(session.subscription) ?? idOf(session.payment_intent) ?? str(session.id);
  if (!subscriptionId) return { action: "cannot-act", problem: "the session has no id" };

  const metadata = metadataOf(session);
  const productId = str(metadata[PRODUCT_METADATA_KEY]) ?? options.defaultProductId;
  let quantity = 1;
  const rawQuantity = metadata[QUANTITY_METADATA_KEY];
  if (rawQuantity !== undefined && rawQuantity !== "") {
    if (typeof rawQuantity !== "string" || !/^[1-9]\d{0,5}$/.test(rawQuantity)) {
      return {
        action: "cannot-act",
        problem: `session metadata ${QUANTITY_METADATA_KEY} is not a positive whole number`,
      };
    }
    quantity = Number(rawQuantity);
  }
  return {
    action: "call",
    subject: subscriptionId,
    call: {
      rpc: "IssueLicense",
      request: {
        requestId: event.id,
        user: { case: "userEmail", value: email },
        productId: productId ?? "",
        subscriptionId,
        quantity,
      },
    },
  };
}

// invoice.paid → RenewLicense to the end of the paid period.
//
// The first invoice of a subscription (billing_reason subscription_create)
// is acknowledged without action: its license comes from the Checkout
// Session. Acting on both is how Cryptlex's own Stripe integration creates
// two licenses for one purchase.
function invoicePaid(event: Stripe.Event, invoice: Obj, options: MappingOptions): Plan {
  if (invoice.billing_reason === "subscription_create") {
    return { action: "acknowledge", why: "first invoice of a subscription: the license comes from checkout" };
  }
  const parent = obj(invoice.parent);
  const subscriptionId =
    idOf(obj(parent?.subscription_details)?.subscription) ?? idOf(invoice.subscription);
  if (!subscriptionId) return { action: "acknowledge", why: "invoice not for a subscription" };

  const periodEnd = subscriptionPeriodEnd(invoice, subscriptionId);
  if (periodEnd === undefined) {
    return { action: "cannot-act", problem: "the invoice has no subscription line with a period end" };
  }
  const expiresAtSeconds = periodEnd + (options.renewalGraceSeconds ?? 0);
  return {
    action: "call",
    subject: subscriptionId,
    call: {
      rpc: "RenewLicense",
      request: {
        requestId: event.id,
        target: { case: "subscriptionId", value: subscriptionId },
        expiresAt: timestampFromMs(expiresAtSeconds * 1000),
      },
    },
  };
}

/** The latest `period.end` of the invoice's lines for this subscription,
 * prorations excluded. Not `invoice.period_end`: for subscription invoices
 * that is the end of the period *before* the one just paid. */
function subscriptionPeriodEnd(invoice: Obj, subscriptionId: string): number | undefined {
  const lines = obj(invoice.lines)?.data;
  if (!Array.isArray(lines)) return undefined;
  let latest: number | undefined;
  for (const raw of lines) {
    const line = obj(raw);
    if (!line) continue;
    const details = obj(obj(line.parent)?.subscription_item_details);
    const lineSubscription = idOf(details?.subscription) ?? idOf(line.subscription);
    const isSubscriptionLine =
      details !== undefined || line.type === "subscription" || lineSubscription !== undefined;
    if (!isSubscriptionLine) continue;
    if (lineSubscription !== undefined && lineSubscription !== subscriptionId) continue;
    if (details?.proration === true || line.proration === true) continue;
    const end = obj(line.period)?.end;
    if (typeof end === "number" && Number.isFinite(end) && (latest === undefined || end > latest)) latest = end;
  }
  return latest;
}

// customer.subscription.paused / resumed → SuspendLicense / ResumeLicense,
// ordered by the event's `created` time: the gateway applies the latest
// event per license and answers `superseded` for an older one that arrives
// late (Stripe does not deliver in order).
function pauseOrResume(event: Stripe.Event, subscription: Obj, rpc: "SuspendLicense" | "ResumeLicense"): Plan {
  const subscriptionId = str(subscription.id);
  if (!subscriptionId) return { action: "cannot-act", problem: "the subscription has no id" };
  if (typeof event.created !== "number") return { action: "cannot-act", problem: "the event has no created time" };
  const request = {
    requestId: event.id,
    target: { case: "subscriptionId" as const, value: subscriptionId },
    eventTime: timestampFromMs(event.created * 1000),
  };
  const call: GatewayCall = rpc === "SuspendLicense" ? { rpc, request } : { rpc, request };
  return { action: "call", subject: subscriptionId, call };
}

// customer.subscription.deleted (the subscription has ended: cancelled now,
// or at the end of the period) → RevokeLicense(CANCELLATION).
function subscriptionDeleted(event: Stripe.Event, subscription: Obj): Plan {
  const subscriptionId = str(subscription.id);
  if (!subscriptionId) return { action: "cannot-act", problem: "the subscription has no id" };
  return revoke(event, subscriptionId, RevocationReason.CANCELLATION, `stripe subscription ${subscriptionId} ended`);
}

// charge.refunded → RevokeLicense(REFUND), for a full refund only: a partial
// refund (a goodwill credit, one seat of several) keeps the license, and is
// logged. The reference: the charge's metadata `subscription_id` when the
// shop sets it, else its PaymentIntent (the reference a one-time Checkout
// purchase was issued with).
function chargeRefunded(event: Stripe.Event, charge: Obj): Plan {
  if (charge.refunded !== true) {
    return { action: "acknowledge", why: "partial refund: the license stays" };
  }
  const reference = str(metadataOf(charge)[SUBSCRIPTION_METADATA_KEY]) ?? idOf(charge.payment_intent);
  if (!reference) {
    return { action: "cannot-act", problem: "the charge has neither metadata subscription_id nor a payment_intent" };
  }
  return revoke(event, reference, RevocationReason.REFUND, `stripe charge ${str(charge.id) ?? "?"} refunded`);
}

// charge.dispute.created → RevokeLicense(CHARGEBACK) through the dispute's
// PaymentIntent (the dispute carries no copy of the charge's metadata).
function disputeCreated(event: Stripe.Event, dispute: Obj): Plan {
  const reference = idOf(dispute.payment_intent);
  if (!reference) return { action: "cannot-act", problem: "the dispute has no payment_intent" };
  const reason = str(dispute.reason);
  const note = `stripe dispute ${str(dispute.id) ?? "?"}${reason ? ` (${reason})` : ""}`;
  return revoke(event, reference, RevocationReason.CHARGEBACK, note);
}

function revoke(event: Stripe.Event, reference: string, reason: RevocationReason, note: string): Plan {
  return {
    action: "call",
    subject: reference,
    call: {
      rpc: "RevokeLicense",
      request: {
        requestId: event.id,
        target: { case: "subscriptionId", value: reference },
        reason,
        note,
      },
    },
  };
}
