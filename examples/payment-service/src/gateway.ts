// The licensing gateway's IssuanceService over gRPC (HTTP/2) with mutual
// TLS, and the README's retry contract as code.
//
// Retry contract (README, "The internal listener and exactly-once
// issuance"):
// - OK is final, whether `replayed` (a redelivery answered from the ledger)
//   or `superseded` (a late suspend/resume that changed nothing).
// - FAILED_PRECONDITION, INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED are
//   final: the same request can never succeed; a person must fix the
//   request or the configuration.
// - UNAVAILABLE, ABORTED, DEADLINE_EXCEEDED and connection failures are not
//   final: retry with the same request id, honouring RetryInfo.
// Codes the contract does not name for IssuanceService (UNIMPLEMENTED from a
// gateway older than the contract, INTERNAL, UNKNOWN, ...) are treated as
// "retry" too: a payment must not be dropped because of a gateway bug or an
// unfinished deploy, and Stripe keeps redelivering while a person looks.

import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";

import { ErrorInfoSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb";
import { IssuanceService, type LicenseUpdate } from "./gen/licensing/v1/issuance_service_pb";
import type { IssuedLicense } from "./gen/licensing/v1/types_pb";
import type { Config } from "./config";
import type { GatewayCall } from "./events";

export type IssuanceClient = Client<typeof IssuanceService>;

/** The `ErrorInfo.domain` of the gateway's errors. */
export const ERROR_DOMAIN = "licensing-gateway";

/** Creates the IssuanceService client: gRPC over HTTP/2, mutual TLS with
 * this service's certificate. One HTTP/2 connection is kept and reused. */
export function createIssuanceClient(config: Pick<Config, "gatewayUrl" | "gatewayServerName" | "tls">): IssuanceClient {
  const transport = createGrpcTransport({
    baseUrl: config.gatewayUrl,
    nodeOptions: {
      ca: config.tls.ca,
      cert: config.tls.cert,
      key: config.tls.key,
      ...(config.gatewayServerName ? { servername: config.gatewayServerName } : {}),
    },
    // Notice a dead connection between webhooks rather than on the next one.
    pingIntervalMs: 30_000,
    pingIdleConnection: true,
    idleConnectionTimeoutMs: 5 * 60_000,
  });
  return createClient(IssuanceService, transport);
}

/** A license as the log may show it: ids and state, never the key. */
export interface LicenseSummary {
  id: string;
  productId: string;
  subscriptionId: string;
  expiresAt: string | undefined;
  revoked: boolean;
  suspended: boolean;
  /** Only for lifecycle calls: a later event had already been applied. */
  superseded?: boolean;
}

/** What one gateway call came to. */
export type CallOutcome =
  /** OK: the outcome is final. */
  | { kind: "done"; replayed: boolean; superseded: boolean; licenses: LicenseSummary[]; attempts: number }
  /** A final refusal: acknowledge the event and log the problem. */
  | { kind: "refused"; code: string; reason: string | undefined; message: string; attempts: number }
  /** Not final: answer 503 so the provider redelivers (same event id). */
  | {
      kind: "retry";
      code: string;
      reason: string | undefined;
      message: string;
      retryAfterMs: number | undefined;
      attempts: number;
    };

const FINAL_CODES = new Set<Code>([Code.FailedPrecondition, Code.InvalidArgument, Code.NotFound, Code.PermissionDenied]);

/** Classifies a failed call by the retry contract. */
export function classifyError(
  error: unknown,
): Omit<Extract<CallOutcome, { kind: "refused" }>, "attempts"> | Omit<Extract<CallOutcome, { kind: "retry" }>, "attempts"> {
  const connectError = ConnectError.from(error);
  const info = connectError.findDetails(ErrorInfoSchema).find((detail) => detail.domain === ERROR_DOMAIN);
  const retry = connectError.findDetails(RetryInfoSchema)[0]?.retryDelay;
  const common = {
    code: Code[connectError.code] ?? String(connectError.code),
    reason: info?.reason,
    // The gateway's messages are written to be safe to log (README, Errors).
    // Connection errors carry Node's message (an address, a TLS alert).
    message: connectError.rawMessage,
  };
  if (FINAL_CODES.has(connectError.code)) return { kind: "refused", ...common };
  const retryAfterMs = retry === undefined ? undefined : Number(retry.seconds) * 1000 + Math.round(retry.nanos / 1e6);
  return { kind: "retry", ...common, retryAfterMs };
}

function summary(license: IssuedLicense | undefined, superseded?: boolean): LicenseSummary | undefined {
  if (!license) return undefined;
  return {
    id: license.id,
    productId: license.productId,
    subscriptionId: license.subscriptionId,
    expiresAt: iso(license.expiresAt),
    revoked: license.revoked,
    suspended: license.suspended,
    ...(superseded === undefined ? {} : { superseded }),
  };
}

function iso(timestamp: Timestamp | undefined): string | undefined {
  return timestamp === undefined ? undefined : timestampDate(timestamp).toISOString();
}

function updates(list: LicenseUpdate[]): LicenseSummary[] {
  return list.flatMap((update) => summary(update.license, update.superseded) ?? []);
}

/** A lifecycle answer changed nothing when every license it addressed was
 * superseded (a later event, a revoked license, a renewal to an earlier
 * date than the license already had). */
function lifecycle(response: { replayed: boolean; superseded?: boolean; licenses: LicenseUpdate[] }) {
  const licenses = updates(response.licenses);
  const allSuperseded = response.licenses.length > 0 && response.licenses.every((update) => update.superseded);
  return { replayed: response.replayed, superseded: (response.superseded ?? false) || allSuperseded, licenses };
}

/** Sends one call; returns what the answer means, without retrying. */
async function send(
  client: IssuanceClient,
  call: GatewayCall,
  timeoutMs: number,
): Promise<{ replayed: boolean; superseded: boolean; licenses: LicenseSummary[] }> {
  const options = { timeoutMs };
  switch (call.rpc) {
    case "IssueLicense": {
      const response = await client.issueLicense(call.request, options);
      const all = response.licenses.length > 0 ? response.licenses : response.license ? [response.license] : [];
      return { replayed: response.replayed, superseded: false, licenses: all.flatMap((l) => summary(l) ?? []) };
    }
    case "RenewLicense": {
      const response = await client.renewLicense(call.request, options);
      return lifecycle(response);
    }
    case "SuspendLicense": {
      const response = await client.suspendLicense(call.request, options);
      return lifecycle(response);
    }
    case "ResumeLicense": {
      const response = await client.resumeLicense(call.request, options);
      return lifecycle(response);
    }
    case "RevokeLicense": {
      const response = await client.revokeLicense(call.request, options);
      return lifecycle(response);
    }
  }
}

export interface ExecuteOptions {
  /** The whole time available, retries included. */
  budgetMs: number;
  /** Called before each retry (for the log). */
  onRetry?: (outcome: Extract<CallOutcome, { kind: "retry" }>, waitMs: number) => void;
  /** Test seams. */
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

/** An attempt gets at least this long, or is not started. */
const MIN_ATTEMPT_MS = 500;

/** Calls the gateway, retrying a non-final failure in place (same request,
 * so the same request id) while the budget allows, for the blips a retry a
 * moment later fixes (a concurrent duplicate's `ABORTED`, a lost
 * connection). Stripe's own redelivery comes minutes to hours later. */
export async function execute(client: IssuanceClient, call: GatewayCall, options: ExecuteOptions): Promise<CallOutcome> {
  const now = options.now ?? Date.now;
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  const deadline = now() + options.budgetMs;
  for (let attempts = 1; ; attempts++) {
    try {
      const answer = await send(client, call, Math.max(MIN_ATTEMPT_MS, deadline - now()));
      return { kind: "done", ...answer, attempts };
    } catch (error) {
      const outcome = { ...classifyError(error), attempts };
      if (outcome.kind === "refused") return outcome;
      const retryable = RETRY_IN_PLACE.has(outcome.code);
      const waitMs = outcome.retryAfterMs ?? Math.min(2000, 100 * 2 ** attempts);
      if (!retryable || now() + waitMs + MIN_ATTEMPT_MS > deadline) return outcome;
      options.onRetry?.(outcome, waitMs);
      await sleep(waitMs);
    }
  }
}

/** The codes worth retrying within one delivery; the rest wait for Stripe's
 * redelivery (a deploy or a person has to fix them first). */
const RETRY_IN_PLACE = new Set<string>([Code[Code.Unavailable], Code[Code.Aborted], Code[Code.DeadlineExceeded]]);
