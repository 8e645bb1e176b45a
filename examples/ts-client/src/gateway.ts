// A small typed wrapper around the generated licensing-gateway client.
//
// - Speaks the Connect protocol (binary by default, JSON on request) or
//   gRPC-Web (binary) over `fetch` only, so it runs in browsers, in Node 20+
//   and on edge runtimes alike. Both reach the same port and paths.
// - Every failure becomes a `GatewayError` with the gRPC code, the stable
//   `google.rpc.ErrorInfo` reason the gateway attaches, any field violations
//   and retry delay, and a message that is safe to show to an end user.

import { Code, ConnectError, createClient, type CallOptions, type Client } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";

import {
  BadRequestSchema,
  ErrorInfoSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb";
import {
  LicenseStatus,
  type Activation,
  type FeatureEntitlement,
  type License,
  type Profile,
  type Release,
  type Session,
} from "./gen/licensing/v1/types_pb";
import { UserService } from "./gen/licensing/v1/user_service_pb";

export { Code } from "@connectrpc/connect";
export type { CallOptions } from "@connectrpc/connect";
export { LicenseStatus } from "./gen/licensing/v1/types_pb";
export type {
  Activation,
  FeatureEntitlement,
  License,
  Profile,
  Release,
  ReleaseFile,
  Session,
} from "./gen/licensing/v1/types_pb";
export { UserService } from "./gen/licensing/v1/user_service_pb";
export type { Timestamp } from "@bufbuild/protobuf/wkt";

/** The `ErrorInfo.domain` of every error the gateway returns. */
export const ERROR_DOMAIN = "licensing-gateway";

/** The raw generated client: one method per RPC. */
export type UserClient = Client<typeof UserService>;

/** The wire protocols the gateway's public listener speaks to `fetch`. */
export type Protocol = "connect" | "grpc-web";

export interface GatewayOptions {
  /** The gateway's public listener, e.g. `http://127.0.0.1:50051`. */
  baseUrl: string;
  /** A custom `fetch` (defaults to the global one). */
  fetch?: typeof globalThis.fetch;
  /** The deadline sent on every call (`connect-timeout-ms` or
   * `grpc-timeout`). Default 10 s. */
  timeoutMs?: number;
  /**
   * `"connect"` (the default): the Connect protocol, plain HTTP POSTs (and
   * GETs, see `useHttpGet`) that any proxy, CDN or devtools understands.
   * `"grpc-web"`: binary gRPC-Web, for a deployment whose proxy only lets
   * gRPC-Web through (or a gateway older than Connect support).
   */
  protocol?: Protocol;
  /**
   * `true` (the default) sends binary protobuf (`application/proto`, or
   * `application/grpc-web+proto` for gRPC-Web), `false` sends the protobuf
   * JSON mapping (`application/json`, or `application/grpc-web+json`).
   */
  useBinaryFormat?: boolean;
  /**
   * Connect only: send the side-effect-free calls (`idempotency_level =
   * NO_SIDE_EFFECTS` in the contract: GetProfile, ListMyLicenses, GetLicense,
   * ListActivations, ListReleases) as `GET` with the request in the query
   * string. Default true. The gateway answers them with
   * `Cache-Control: private, no-store`, since every answer is one user's.
   */
  useHttpGet?: boolean;
}

/**
 * Creates the generated `UserService` client over `fetch`: the Connect
 * protocol in binary by default, or gRPC-Web (`protocol: "grpc-web"`).
 *
 * Why binary Connect by default (connect-web itself defaults to JSON):
 * - this client mostly runs on servers (the Next.js example calls the
 *   gateway from server components and actions only), where nobody reads
 *   requests in a browser's devtools, which is JSON's advantage;
 * - binary is smaller on the wire (a ListMyLicenses page is about a third of
 *   its JSON size; see docs/clients.md) and cheaper to encode and decode, and
 *   connect-node, connect-go and buf curl all default to it;
 * - it is the same protobuf encoding gRPC and gRPC-Web callers send, so a
 *   field added to the contract reads the same on every protocol.
 * Errors are the same either way: Connect's error body is always JSON, and
 * `toGatewayError` reads the same `ErrorInfo`/`BadRequest`/`RetryInfo`
 * details from it as from gRPC-Web's trailers.
 */
export function createUserClient(options: GatewayOptions): UserClient {
  const defaultTimeoutMs = options.timeoutMs ?? 10_000;
  const transport =
    (options.protocol ?? "connect") === "grpc-web"
      ? createGrpcWebTransport({
          baseUrl: options.baseUrl,
          useBinaryFormat: options.useBinaryFormat ?? true,
          fetch: options.fetch,
          defaultTimeoutMs,
        })
      : createConnectTransport({
          baseUrl: options.baseUrl,
          useBinaryFormat: options.useBinaryFormat ?? true,
          useHttpGet: options.useHttpGet ?? true,
          fetch: options.fetch,
          defaultTimeoutMs,
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
    return (
      this.code === Code.Unauthenticated &&
      this.reason !== "INVALID_CREDENTIALS" &&
      this.reason !== "TWO_FACTOR_REQUIRED"
    );
  }

  /** True when `Login` needs the user's two-factor code (or a recovery code):
   * the email and password were right, so ask for the code and call again. */
  get needsTwoFactor(): boolean {
    return this.reason === "TWO_FACTOR_REQUIRED";
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
    case "TWO_FACTOR_REQUIRED":
      return "Enter the six-digit code from your authenticator app to finish signing in.";
    case "INVALID_TWO_FACTOR_CODE":
      return "That code didn't work. Check your authenticator app (or the recovery code) and try again.";
    case "TWO_FACTOR_NOT_ENABLED":
      return "Two-factor authentication isn't turned on for your account.";
    case "WRONG_CURRENT_PASSWORD":
      return "Your current password isn't right. Check it and try again.";
    case "RESET_TOKEN_INVALID":
      return "This password reset link has expired or has already been used. Please ask for a new one.";
    case "DEACTIVATION_LIMIT_REACHED":
      return "This license has used all of its deactivations, so this machine can't be deactivated here. Please contact support to move the license.";
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

/** Throws the "no X in response" internal error for a missing message field. */
function required<T>(value: T | undefined, what: string): T {
  if (value === undefined) {
    throw new GatewayError(Code.Internal, undefined, friendlyMessage(Code.Internal, undefined), `no ${what} in response`);
  }
  return value;
}

/**
 * What a license means for its owner now. The gateway sends `status`; an
 * older gateway does not (`LICENSE_STATUS_UNSPECIFIED`), and then it is
 * derived the same way from `revoked`, `suspended` and `expiresAt`.
 */
export function licenseStatus(license: License, now: Date = new Date()): LicenseStatus {
  if (license.status !== LicenseStatus.UNSPECIFIED) return license.status;
  if (license.revoked) return LicenseStatus.REVOKED;
  if (license.suspended) return LicenseStatus.SUSPENDED;
  const expiresAt = optionalDate(license.expiresAt);
  if (!license.perpetual && expiresAt !== undefined && expiresAt.getTime() <= now.getTime()) {
    return LicenseStatus.EXPIRED;
  }
  return LicenseStatus.ACTIVE;
}

/** Sign-in credentials; at most one of the two second factors. */
export interface LoginCredentials {
  email: string;
  password: string;
  /** The six-digit code from the authenticator app. */
  twoFactorCode?: string;
  /** One of the user's recovery codes, instead of `twoFactorCode`. */
  twoFactorRecoveryCode?: string;
}

/** The fields `updateProfile` can change; the ones given are the update mask. */
export interface ProfileChanges {
  firstName?: string;
  lastName?: string;
}

/** Whose password `resetPassword` sets: from the reset link. */
export type ResetPasswordUser = { email: string } | { userId: string };

/** Follows AIP-158 page tokens to the end, at most `maxPages` pages. */
async function allPages<T>(
  fetchPage: (pageToken: string) => Promise<{ items: T[]; nextPageToken: string }>,
  maxPages = 100,
): Promise<T[]> {
  const all: T[] = [];
  let pageToken = "";
  for (let page = 0; page < maxPages; page++) {
    const result = await fetchPage(pageToken);
    all.push(...result.items);
    // A page may be short or empty and still carry a token: stop only on "".
    if (result.nextPageToken === "") return all;
    pageToken = result.nextPageToken;
  }
  return all;
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

  // --- Sessions ---

  /**
   * Signs in. For an account with two-factor authentication the first call
   * (without a code) fails with `needsTwoFactor`; call again with the same
   * email and password plus `twoFactorCode` or `twoFactorRecoveryCode`.
   *
   * `options` carries extra metadata; a server-side caller passes the end
   * user's address on in it (see `examples/nextjs/lib/gateway.ts`), so the
   * gateway's sign-in limits count per user, not per website backend.
   */
  login(email: string, password: string, options?: CallOptions): Promise<SessionTokens>;
  login(credentials: LoginCredentials, options?: CallOptions): Promise<SessionTokens>;
  login(
    emailOrCredentials: string | LoginCredentials,
    passwordOrOptions?: string | CallOptions,
    maybeOptions: CallOptions = {},
  ): Promise<SessionTokens> {
    const credentials: LoginCredentials =
      typeof emailOrCredentials === "string"
        ? { email: emailOrCredentials, password: String(passwordOrOptions ?? "") }
        : emailOrCredentials;
    const options =
      typeof emailOrCredentials === "string" ? maybeOptions : ((passwordOrOptions as CallOptions | undefined) ?? {});
    return wrap(async () =>
      tokens(
        (
          await this.client.login(
            {
              email: credentials.email,
              password: credentials.password,
              twoFactorCode: credentials.twoFactorCode ?? "",
              twoFactorRecoveryCode: credentials.twoFactorRecoveryCode ?? "",
            },
            options,
          )
        ).session,
      ),
    );
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

  // --- Profile and password ---

  getProfile(accessToken: string): Promise<Profile> {
    return wrap(async () => required((await this.client.getProfile({}, withToken(accessToken))).profile, "profile"));
  }

  /**
   * Changes the first and/or last name (`UpdateProfile`); the keys present in
   * `changes` become the update mask, so `{ lastName: "" }` clears the last
   * name and leaves the first name alone. Returns the updated profile.
   */
  updateProfile(accessToken: string, changes: ProfileChanges): Promise<Profile> {
    const paths: string[] = [];
    if (changes.firstName !== undefined) paths.push("first_name");
    if (changes.lastName !== undefined) paths.push("last_name");
    return wrap(async () => {
      const response = await this.client.updateProfile(
        {
          profile: { firstName: changes.firstName ?? "", lastName: changes.lastName ?? "" },
          updateMask: { paths },
        },
        withToken(accessToken),
      );
      return required(response.profile, "profile");
    });
  }

  /** A wrong current password fails with reason `WRONG_CURRENT_PASSWORD`. */
  changePassword(accessToken: string, currentPassword: string, newPassword: string): Promise<void> {
    return wrap(async () => {
      await this.client.changePassword({ currentPassword, newPassword }, withToken(accessToken));
    });
  }

  // --- Password reset (no session) ---

  /**
   * Asks for a reset mail. Succeeds the same way whether or not the account
   * exists, so say "if an account exists, we've sent a link". `options` as
   * for `login` (the gateway throttles per client address).
   */
  requestPasswordReset(email: string, options: CallOptions = {}): Promise<void> {
    return wrap(async () => {
      await this.client.requestPasswordReset({ email }, options);
    });
  }

  /**
   * Sets a new password with the token from the reset mail. A used, expired
   * or unknown token fails with reason `RESET_TOKEN_INVALID`.
   */
  resetPassword(
    input: ResetPasswordUser & { token: string; newPassword: string },
    options: CallOptions = {},
  ): Promise<void> {
    const user =
      "userId" in input
        ? { case: "userId" as const, value: input.userId }
        : { case: "email" as const, value: input.email };
    return wrap(async () => {
      await this.client.resetPassword({ user, token: input.token, newPassword: input.newPassword }, options);
    });
  }

  // --- Two-factor authentication ---

  /**
   * Makes a new TOTP secret: show `otpauthUrl` as a QR code and `secret` for
   * typing in by hand. Both are secrets for the user's eyes only. Nothing
   * changes until `enableTwoFactor` confirms a code.
   */
  startTwoFactorEnrollment(accessToken: string): Promise<{ otpauthUrl: string; secret: string }> {
    return wrap(async () => {
      const { otpauthUrl, secret } = await this.client.startTwoFactorEnrollment({}, withToken(accessToken));
      return { otpauthUrl, secret };
    });
  }

  /** Turns two-factor on with a current code; returns the updated profile. */
  enableTwoFactor(accessToken: string, code: string): Promise<Profile> {
    return wrap(async () =>
      required((await this.client.enableTwoFactor({ code }, withToken(accessToken))).profile, "profile"),
    );
  }

  /** New recovery codes (the old ones stop working). Show them once. */
  createRecoveryCodes(accessToken: string, code: string): Promise<string[]> {
    return wrap(async () => (await this.client.createRecoveryCodes({ code }, withToken(accessToken))).recoveryCodes);
  }

  /** Turns two-factor off with a current code; returns the updated profile. */
  disableTwoFactor(accessToken: string, code: string): Promise<Profile> {
    return wrap(async () =>
      required((await this.client.disableTwoFactor({ code }, withToken(accessToken))).profile, "profile"),
    );
  }

  // --- Licenses ---

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
  listAllLicenses(
    accessToken: string,
    options: { pageSize?: number; productId?: string; maxPages?: number } = {},
  ): Promise<License[]> {
    return allPages(async (pageToken) => {
      const page = await this.listLicensesPage(accessToken, {
        pageSize: options.pageSize,
        productId: options.productId,
        pageToken,
      });
      return { items: page.licenses, nextPageToken: page.nextPageToken };
    }, options.maxPages);
  }

  /** One of the caller's licenses with its feature entitlements; another
   * user's (or an unknown) license fails with `NOT_FOUND`. */
  getLicense(
    accessToken: string,
    licenseId: string,
  ): Promise<{ license: License; featureEntitlements: FeatureEntitlement[] }> {
    return wrap(async () => {
      const response = await this.client.getLicense({ licenseId }, withToken(accessToken));
      return { license: required(response.license, "license"), featureEntitlements: response.featureEntitlements };
    });
  }

  // --- Machines (activations) ---

  /** One page of the machines activated with one of the caller's licenses. */
  listActivationsPage(
    accessToken: string,
    licenseId: string,
    page: { pageSize?: number; pageToken?: string } = {},
  ): Promise<{ activations: Activation[]; nextPageToken: string }> {
    return wrap(async () => {
      const response = await this.client.listActivations({ licenseId, ...page }, withToken(accessToken));
      return { activations: response.activations, nextPageToken: response.nextPageToken };
    });
  }

  /** Every machine of one license, following page tokens to the end. */
  listAllActivations(
    accessToken: string,
    licenseId: string,
    options: { pageSize?: number; maxPages?: number } = {},
  ): Promise<Activation[]> {
    return allPages(async (pageToken) => {
      const page = await this.listActivationsPage(accessToken, licenseId, { pageSize: options.pageSize, pageToken });
      return { items: page.activations, nextPageToken: page.nextPageToken };
    }, options.maxPages);
  }

  /**
   * Deactivates one of the caller's machines and returns its license's id
   * (read the license again for the new counts). Fails with
   * `DEACTIVATION_LIMIT_REACHED` when the license has no deactivations left,
   * and with `NOT_FOUND` for a machine that is not the caller's.
   */
  deactivateMachine(accessToken: string, activationId: string): Promise<{ licenseId: string }> {
    return wrap(async () => {
      const { licenseId } = await this.client.deactivateMachine({ activationId }, withToken(accessToken));
      return { licenseId };
    });
  }

  // --- Releases ---

  /** One page of the releases the caller may download, newest first. */
  listReleasesPage(
    accessToken: string,
    page: { productName?: string; channel?: string; pageSize?: number; pageToken?: string } = {},
  ): Promise<{ releases: Release[]; nextPageToken: string }> {
    return wrap(async () => {
      const response = await this.client.listReleases(page, withToken(accessToken));
      return { releases: response.releases, nextPageToken: response.nextPageToken };
    });
  }

  /** Every release the caller may download (optionally of one product or
   * channel), newest first, following page tokens to the end. */
  listAllReleases(
    accessToken: string,
    options: { productName?: string; channel?: string; pageSize?: number; maxPages?: number } = {},
  ): Promise<Release[]> {
    return allPages(async (pageToken) => {
      const page = await this.listReleasesPage(accessToken, {
        productName: options.productName,
        channel: options.channel,
        pageSize: options.pageSize,
        pageToken,
      });
      return { items: page.releases, nextPageToken: page.nextPageToken };
    }, options.maxPages);
  }
}
