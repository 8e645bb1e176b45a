// A small typed wrapper around the generated licensing-gateway client.
//
// - Speaks gRPC-Web (binary) over `fetch` only, so it runs in browsers, in
//   Node 20+ and on edge runtimes alike.
// - Every failure becomes a `GatewayError` with the gRPC code, the stable
//   `google.rpc.ErrorInfo` reason the gateway attaches, any field violations
//   and retry delay, and a message that is safe to show to an end user.

import { Code, ConnectError, createClient, type CallOptions, type Client } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";

import {
  BadRequestSchema,
  ErrorInfoSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb";
import type { License, Profile, Session } from "./gen/licensing/v1/types_pb";
import { UserService } from "./gen/licensing/v1/user_service_pb";

export { Code } from "@connectrpc/connect";
export type { CallOptions } from "@connectrpc/connect";
export type { License, Profile, Session } from "./gen/licensing/v1/types_pb";
export { UserService } from "./gen/licensing/v1/user_service_pb";

/** The `ErrorInfo.domain` of every error the gateway returns. */
export const ERROR_DOMAIN = "licensing-gateway";

/** The raw generated client: one method per RPC. */
export type UserClient = Client<typeof UserService>;

export interface GatewayOptions {
  /** The gateway's public listener, e.g. `http://127.0.0.1:50051`. */
  baseUrl: string;
  /** A custom `fetch` (defaults to the global one). */
  fetch?: typeof globalThis.fetch;
  /** The deadline sent as `grpc-timeout` on every call. Default 10 s. */
  timeoutMs?: number;
}

/** Creates the generated `UserService` client over gRPC-Web (binary, fetch only). */
export function createUserClient(options: GatewayOptions): UserClient {
  const transport = createGrpcWebTransport({
    baseUrl: options.baseUrl,
    // tonic-web speaks the binary gRPC-Web format only (not +json).
    useBinaryFormat: true,
    fetch: options.fetch,
    defaultTimeoutMs: options.timeoutMs ?? 10_000,
  });
  return createClient(UserService, transport);
}

/** Call options carrying `authorization: Bearer <accessToken>`. */
export function withToken(accessToken: string, options: CallOptions = {}): CallOptions {
  const headers = new Headers(options.headers);
  headers.set("authorization", `Bearer ${accessToken}`);
  return { ...options, headers };
}

/** One invalid request field, from `google.rpc.BadRequest`. */
export interface FieldViolation {
  field: string;
  description: string;
}

/** A failed gateway call, decoded. `message` is safe to show to users. */
export class GatewayError extends Error {
  override readonly name = "GatewayError";

  constructor(
    /** The gRPC status code. */
    readonly code: Code,
    /** `ErrorInfo.reason` (e.g. `INVALID_CREDENTIALS`); undefined when the
     * error did not come from the gateway (network failure, proxy, ...). */
    readonly reason: string | undefined,
    /** A message for end users. */
    message: string,
    /** The gateway's own message (English, for logs; free of secrets). */
    readonly serverMessage: string,
    readonly fieldViolations: FieldViolation[] = [],
    /** From `RetryInfo`, when the gateway suggests a delay. */
    readonly retryAfterMs: number | undefined = undefined,
    /** `ErrorInfo.metadata`. */
    readonly metadata: Record<string, string> = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** The name of the code, e.g. `Unauthenticated`. */
  get codeName(): string {
    return Code[this.code] ?? String(this.code);
  }

  /** True when the user must sign in again (or refresh the session). */
  get needsSignIn(): boolean {
    return this.code === Code.Unauthenticated && this.reason !== "INVALID_CREDENTIALS";
  }
}

/** Turns anything thrown by a client call into a `GatewayError`. */
export function toGatewayError(error: unknown): GatewayError {
  if (error instanceof GatewayError) return error;
  const connectError = ConnectError.from(error);
  const info = connectError
    .findDetails(ErrorInfoSchema)
    .find((detail) => detail.domain === ERROR_DOMAIN);
  const violations = connectError
    .findDetails(BadRequestSchema)
    .flatMap((detail) => detail.fieldViolations)
    .map(({ field, description }) => ({ field, description }));
  const retry = connectError.findDetails(RetryInfoSchema)[0]?.retryDelay;
  const retryAfterMs =
    retry === undefined ? undefined : Number(retry.seconds) * 1000 + Math.round(retry.nanos / 1e6);
  return new GatewayError(
    connectError.code,
    info?.reason,
    friendlyMessage(connectError.code, info?.reason, violations, retryAfterMs),
    connectError.rawMessage,
    violations,
    retryAfterMs,
    info?.metadata ?? {},
    { cause: error },
  );
}

/** The end-user message for an error, by `ErrorInfo` reason, then by code. */
export function friendlyMessage(
  code: Code,
  reason: string | undefined,
  violations: FieldViolation[] = [],
  retryAfterMs?: number,
): string {
  const later =
    retryAfterMs === undefined
      ? "Please try again in a moment."
      : `Please try again in ${Math.max(1, Math.ceil(retryAfterMs / 1000))} s.`;
  switch (reason) {
    case "INVALID_CREDENTIALS":
      return "That email and password don't match. Check them and try again.";
    case "TOKEN_MISSING":
    case "TOKEN_INVALID":
      return "Your session has ended. Please sign in again.";
    case "EMAIL_TAKEN":
      return "An account with this email already exists. Try signing in instead.";
    case "SIGN_UP_DISABLED":
      return "Sign-up is not available at the moment.";
    case "INVALID_ARGUMENT":
      return violations.length > 0
        ? `Please check the form: ${violations.map((v) => `${v.field} ${v.description}`).join("; ")}.`
        : "Please check the form and try again.";
    case "NOT_FOUND":
      return "We couldn't find that.";
    case "TOO_MANY_ATTEMPTS":
      return `Too many sign-in attempts for this account or network. ${later}`;
    case "TOO_MANY_REQUESTS":
    case "UPSTREAM_RATE_LIMITED":
    case "UPSTREAM_BUDGET_EXHAUSTED":
    case "OVERLOADED":
      return `We're handling a lot of requests right now. ${later}`;
    case "UPSTREAM_CIRCUIT_OPEN":
    case "UPSTREAM_UNAVAILABLE":
    case "UPSTREAM_TIMEOUT":
    case "UPSTREAM_BAD_RESPONSE":
      return `The licensing service is temporarily unavailable. ${later}`;
    case "DEADLINE_EXCEEDED":
      return "That took too long. Please try again.";
    case "INTERNAL":
      return "Something went wrong on our side. Please try again later.";
  }
  switch (code) {
    case Code.Unauthenticated:
      return "Please sign in.";
    case Code.PermissionDenied:
      return "You don't have access to that.";
    case Code.InvalidArgument:
      return "Please check the form and try again.";
    case Code.NotFound:
      return "We couldn't find that.";
    case Code.AlreadyExists:
      return "That already exists.";
    case Code.ResourceExhausted:
    case Code.Unavailable:
      return `The licensing service can't be reached right now. ${later}`;
    case Code.DeadlineExceeded:
    case Code.Canceled:
      return "That took too long. Please try again.";
    default:
      return "Something went wrong. Please try again later.";
  }
}

/** A `Session` with the expiry as a `Date` (informational only). */
export interface SessionTokens {
  accessToken: string;
  refreshToken: string;
  expiresAt: Date | undefined;
}

function tokens(session: Session | undefined): SessionTokens {
  if (session === undefined) {
    throw new GatewayError(Code.Internal, undefined, friendlyMessage(Code.Internal, undefined), "no session in response");
  }
  return {
    accessToken: session.accessToken,
    refreshToken: session.refreshToken,
    expiresAt: optionalDate(session.expiresAt),
  };
}

/** Converts an optional protobuf `Timestamp`. */
export function optionalDate(timestamp: Timestamp | undefined): Date | undefined {
  return timestamp === undefined ? undefined : timestampDate(timestamp);
}

async function wrap<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw toGatewayError(error);
  }
}

/**
 * The user-facing API in one object. Every method throws `GatewayError`.
 *
 * ```ts
 * const gateway = new Gateway({ baseUrl: process.env.GATEWAY_URL! });
 * const session = await gateway.login(email, password);
 * const profile = await gateway.getProfile(session.accessToken);
 * ```
 */
export class Gateway {
  readonly client: UserClient;

  constructor(options: GatewayOptions) {
    this.client = createUserClient(options);
  }

  /**
   * `options` carries extra metadata; a server-side caller passes the end
   * user's address on in it (see `examples/nextjs/lib/gateway.ts`), so the
   * gateway's sign-in limits count per user, not per website backend.
   */
  login(email: string, password: string, options: CallOptions = {}): Promise<SessionTokens> {
    return wrap(async () => tokens((await this.client.login({ email, password }, options)).session));
  }

  refresh(refreshToken: string): Promise<SessionTokens> {
    return wrap(async () => tokens((await this.client.refreshSession({ refreshToken })).session));
  }

  /** `options` as for `login`. */
  signUp(
    input: {
      email: string;
      password: string;
      firstName: string;
      lastName?: string;
    },
    options: CallOptions = {},
  ): Promise<{ userId: string; session: SessionTokens }> {
    return wrap(async () => {
      const response = await this.client.signUp(input, options);
      return { userId: response.userId, session: tokens(response.session) };
    });
  }

  logout(accessToken: string): Promise<void> {
    return wrap(async () => {
      await this.client.logout({}, withToken(accessToken));
    });
  }

  getProfile(accessToken: string): Promise<Profile> {
    return wrap(async () => {
      const { profile } = await this.client.getProfile({}, withToken(accessToken));
      if (profile === undefined) {
        throw new GatewayError(Code.Internal, undefined, friendlyMessage(Code.Internal, undefined), "no profile in response");
      }
      return profile;
    });
  }

  /** One page of the caller's licenses (AIP-158). */
  listLicensesPage(
    accessToken: string,
    page: { pageSize?: number; pageToken?: string; productId?: string } = {},
  ): Promise<{ licenses: License[]; nextPageToken: string }> {
    return wrap(async () => {
      const response = await this.client.listMyLicenses(page, withToken(accessToken));
      return { licenses: response.licenses, nextPageToken: response.nextPageToken };
    });
  }

  /** Every license of the caller, following page tokens to the end (at most `maxPages`). */
  async listAllLicenses(
    accessToken: string,
    options: { pageSize?: number; productId?: string; maxPages?: number } = {},
  ): Promise<License[]> {
    const all: License[] = [];
    let pageToken = "";
    const maxPages = options.maxPages ?? 100;
    for (let page = 0; page < maxPages; page++) {
      const result = await this.listLicensesPage(accessToken, {
        pageSize: options.pageSize,
        productId: options.productId,
        pageToken,
      });
      all.push(...result.licenses);
      // A page may be short or empty and still carry a token: stop only on "".
      if (result.nextPageToken === "") return all;
      pageToken = result.nextPageToken;
    }
    return all;
  }
}
