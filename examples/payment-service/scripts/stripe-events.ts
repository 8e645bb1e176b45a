// Synthetic Stripe events, shaped like the real ones (API version
// 2025-03-31 and later, with the older invoice fields where wanted), and
// signing them as Stripe does: for the tests and for scripts/send-event.ts.

import { randomBytes } from "node:crypto";
import Stripe from "stripe";

export const TEST_WEBHOOK_SECRET = "whsec_test_payment_service_0123456789abcdef";

let counter = 0;

/** A fresh Stripe-looking id with this prefix. */
export function stripeId(prefix: string): string {
  counter += 1;
  return `${prefix}_test${randomBytes(6).toString("hex")}${counter}`;
}

export interface EventOptions {
  id?: string;
  /** Seconds since the epoch. */
  created?: number;
}

/** A Stripe event envelope around `object`. */
export function event(type: string, object: Record<string, unknown>, options: EventOptions = {}): Stripe.Event {
  return {
    id: options.id ?? stripeId("evt"),
    object: "event",
    api_version: "2025-03-31.basil",
    created: options.created ?? Math.floor(Date.now() / 1000),
    data: { object },
    livemode: false,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: null },
    type,
  } as unknown as Stripe.Event;
}

export interface CheckoutOptions {
  email?: string | null;
  subscription?: string | null;
  paymentIntent?: string | null;
  mode?: "payment" | "subscription" | "setup";
  paymentStatus?: "paid" | "unpaid" | "no_payment_required";
  metadata?: Record<string, string>;
}

export function checkoutSession(options: CheckoutOptions = {}): Record<string, unknown> {
  const mode = options.mode ?? (options.subscription ? "subscription" : "payment");
  return {
    id: stripeId("cs"),
    object: "checkout.session",
    mode,
    payment_status: options.paymentStatus ?? "paid",
    status: "complete",
    customer: stripeId("cus"),
    customer_details: options.email === null ? null : { email: options.email ?? "demo@example.com", name: "Demo User" },
    subscription: options.subscription ?? null,
    payment_intent: options.paymentIntent ?? null,
    metadata: options.metadata ?? {},
  };
}

export interface InvoiceOptions {
  subscription: string;
  billingReason?: string;
  /** Seconds since the epoch. */
  periodStart?: number;
  periodEnd: number;
  /** Put the subscription where API versions before 2025-03-31 did. */
  legacyShape?: boolean;
}

export function invoice(options: InvoiceOptions): Record<string, unknown> {
  const start = options.periodStart ?? options.periodEnd - 30 * 24 * 3600;
  const line = options.legacyShape
    ? {
        id: stripeId("il"),
        object: "line_item",
        type: "subscription",
        subscription: options.subscription,
        proration: false,
        period: { start, end: options.periodEnd },
      }
    : {
        id: stripeId("il"),
        object: "line_item",
        parent: {
          type: "subscription_item_details",
          subscription_item_details: {
            subscription: options.subscription,
            subscription_item: stripeId("si"),
            proration: false,
            invoice_item: null,
            proration_details: null,
          },
          invoice_item_details: null,
        },
        period: { start, end: options.periodEnd },
      };
  return {
    id: stripeId("in"),
    object: "invoice",
    billing_reason: options.billingReason ?? "subscription_cycle",
    status: "paid",
    // For subscription invoices, period_end is the end of the previous
    // period: the receiver must not use it.
    period_start: start - 30 * 24 * 3600,
    period_end: start,
    ...(options.legacyShape
      ? { subscription: options.subscription, parent: null }
      : {
          parent: {
            type: "subscription_details",
            subscription_details: { subscription: options.subscription, metadata: {} },
            quote_details: null,
          },
        }),
    lines: { object: "list", data: [line], has_more: false },
  };
}

export function subscription(id: string, status = "active"): Record<string, unknown> {
  return { id, object: "subscription", status, customer: stripeId("cus"), metadata: {} };
}

export interface ChargeOptions {
  paymentIntent?: string | null;
  refunded?: boolean;
  metadata?: Record<string, string>;
}

export function charge(options: ChargeOptions = {}): Record<string, unknown> {
  const refunded = options.refunded ?? true;
  return {
    id: stripeId("ch"),
    object: "charge",
    amount: 4900,
    amount_refunded: refunded ? 4900 : 1000,
    refunded,
    payment_intent: options.paymentIntent ?? null,
    metadata: options.metadata ?? {},
  };
}

export function dispute(paymentIntent: string | null): Record<string, unknown> {
  return {
    id: stripeId("dp"),
    object: "dispute",
    charge: stripeId("ch"),
    payment_intent: paymentIntent,
    reason: "fraudulent",
    status: "needs_response",
    metadata: {},
  };
}

/** The body and `Stripe-Signature` header Stripe would send. */
export function signed(evt: Stripe.Event, secret = TEST_WEBHOOK_SECRET): { body: string; signature: string } {
  const body = JSON.stringify(evt, null, 2);
  return { body, signature: Stripe.webhooks.generateTestHeaderString({ payload: body, secret }) };
}

/** Posts an event to the receiver as Stripe does. */
export async function deliver(
  url: string,
  evt: Stripe.Event,
  options: { secret?: string; signature?: string } = {},
): Promise<{ status: number; body: Record<string, unknown>; retryAfter: string | null }> {
  const { body, signature } = signed(evt, options.secret);
  const response = await fetch(url, {
    method: "POST",
    headers: {
      "content-type": "application/json; charset=utf-8",
      "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
      "stripe-signature": options.signature ?? signature,
    },
    body,
  });
  const text = await response.text();
  let parsed: Record<string, unknown> = {};
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    parsed = { text };
  }
  return { status: response.status, body: parsed, retryAfter: response.headers.get("retry-after") };
}
