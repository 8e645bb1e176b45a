// Signs a synthetic Stripe event with STRIPE_WEBHOOK_SECRET and posts it to
// the receiver, as Stripe would; prints the answer. For trying the receiver
// against the sandbox without a Stripe account (with one, `stripe listen`
// and `stripe trigger` do the same with real events).
//
//   npm run --silent send -- <event type> [options]
//
//   checkout.session.completed  --email E [--subscription S | --payment-intent P] [--quantity N] [--product ID]
//   invoice.paid                --subscription S [--period-end UNIX] [--billing-reason R]
//   customer.subscription.paused | .resumed | .deleted   --subscription S
//   charge.refunded             [--subscription S] [--payment-intent P]
//   charge.dispute.created      --payment-intent P
//   anything else               sent with an empty object
//
//   common: [--id evt_...] (redeliver: the same id again) [--created UNIX]
//           [--url http://127.0.0.1:4242/stripe/webhook] (or PAYMENT_SERVICE_URL)
//
// Exit status: 0 for a 2xx answer, 1 otherwise.

import { parseArgs } from "node:util";

import * as stripe from "./stripe-events";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    id: { type: "string" },
    created: { type: "string" },
    url: { type: "string" },
    email: { type: "string" },
    subscription: { type: "string" },
    "payment-intent": { type: "string" },
    quantity: { type: "string" },
    product: { type: "string" },
    "period-end": { type: "string" },
    "billing-reason": { type: "string" },
  },
});

function fail(message: string): never {
  console.error(`send-event: ${message}`);
  process.exit(2);
}

const type = positionals[0] ?? fail("name the event type, e.g. checkout.session.completed");
const secret = process.env.STRIPE_WEBHOOK_SECRET ?? fail("STRIPE_WEBHOOK_SECRET is not set");
const url = values.url ?? process.env.PAYMENT_SERVICE_URL ?? "http://127.0.0.1:4242/stripe/webhook";
const need = (name: keyof typeof values): string => (values[name] as string | undefined) ?? fail(`${type} needs --${name}`);
const metadata: Record<string, string> = {};
if (values.quantity) metadata.quantity = values.quantity;
if (values.product) metadata.product_id = values.product;

let object: Record<string, unknown>;
switch (type) {
  case "checkout.session.completed":
  case "checkout.session.async_payment_succeeded":
    object = stripe.checkoutSession({
      email: need("email"),
      subscription: values.subscription ?? null,
      paymentIntent: values["payment-intent"] ?? null,
      metadata,
    });
    break;
  case "invoice.paid":
    object = stripe.invoice({
      subscription: need("subscription"),
      periodEnd: values["period-end"] ? Number(values["period-end"]) : Math.floor(Date.now() / 1000) + 30 * 86400,
      billingReason: values["billing-reason"],
    });
    break;
  case "customer.subscription.paused":
  case "customer.subscription.resumed":
  case "customer.subscription.deleted":
    object = stripe.subscription(need("subscription"));
    break;
  case "charge.refunded":
    object = stripe.charge({
      paymentIntent: values["payment-intent"] ?? null,
      metadata: values.subscription ? { subscription_id: values.subscription } : {},
    });
    break;
  case "charge.dispute.created":
    object = stripe.dispute(need("payment-intent"));
    break;
  default:
    object = { id: stripe.stripeId("obj"), object: type.split(".")[0] };
}

const evt = stripe.event(type, object, {
  id: values.id,
  created: values.created ? Number(values.created) : undefined,
});

// The receiver may still be starting: retry a refused connection briefly.
let answer: Awaited<ReturnType<typeof stripe.deliver>> | undefined;
for (let attempt = 0; ; attempt++) {
  try {
    answer = await stripe.deliver(url, evt, { secret });
    break;
  } catch (error) {
    if (attempt >= 50) fail(`cannot reach ${url}: ${error instanceof Error ? (error.cause ?? error.message) : error}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
console.log(
  JSON.stringify({ event: evt.id, type, status: answer.status, retryAfter: answer.retryAfter ?? undefined, ...answer.body }),
);
process.exit(answer.status < 300 ? 0 : 1);
