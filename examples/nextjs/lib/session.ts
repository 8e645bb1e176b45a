// The session lives in three httpOnly, SameSite=Lax cookies, written and read
// on the server only. They are `secure` everywhere except plain-http
// localhost development.
import "server-only";
import { cookies, headers } from "next/headers";
import { redirect } from "next/navigation";
import { toGatewayError, type GatewayError, type SessionTokens } from "@licensing-gateway/client";

import { codeFor } from "@/lib/error-codes";
import type { ErrorCode } from "@/lib/messages";

export const ACCESS_COOKIE = "lgw_access";
export const REFRESH_COOKIE = "lgw_refresh";
export const EXPIRES_COOKIE = "lgw_expires";

/** The refresh token is only ever sent to the route handlers that use it. */
const REFRESH_PATH = "/api/";
const THIRTY_DAYS = 30 * 24 * 60 * 60;
/** Refresh this long before the access token's stated expiry. */
export const REFRESH_MARGIN_MS = 30_000;

/** The subset of a cookie store this module writes to (next/headers' or a
 * NextResponse's). */
export interface CookieWriter {
  set(name: string, value: string, options: Record<string, unknown>): unknown;
}

/**
 * Plain http is allowed only for local development: cookies set for any
 * other host are `secure`, so the site must be served over HTTPS.
 */
export function secureCookies(host: string | null): boolean {
  const name = (host ?? "").replace(/:\d+$/, "");
  return !(name === "localhost" || name === "127.0.0.1" || name === "[::1]");
}

/** The cookie attributes every cookie of this app has. */
export async function cookieBase(): Promise<{ httpOnly: true; secure: boolean; sameSite: "lax" }> {
  return { httpOnly: true, secure: secureCookies((await headers()).get("host")), sameSite: "lax" };
}

export function writeSession(
  jar: CookieWriter,
  base: { httpOnly: true; secure: boolean; sameSite: "lax" },
  session: SessionTokens,
): void {
  jar.set(ACCESS_COOKIE, session.accessToken, { ...base, path: "/", maxAge: THIRTY_DAYS });
  if (session.refreshToken !== "") {
    jar.set(REFRESH_COOKIE, session.refreshToken, { ...base, path: REFRESH_PATH, maxAge: THIRTY_DAYS });
  }
  if (session.expiresAt !== undefined) {
    jar.set(EXPIRES_COOKIE, String(session.expiresAt.getTime()), { ...base, path: "/", maxAge: THIRTY_DAYS });
  } else {
    jar.set(EXPIRES_COOKIE, "", { ...base, path: "/", maxAge: 0 });
  }
}

export function eraseSession(jar: CookieWriter, base: { httpOnly: true; secure: boolean; sameSite: "lax" }): void {
  jar.set(ACCESS_COOKIE, "", { ...base, path: "/", maxAge: 0 });
  jar.set(REFRESH_COOKIE, "", { ...base, path: REFRESH_PATH, maxAge: 0 });
  jar.set(EXPIRES_COOKIE, "", { ...base, path: "/", maxAge: 0 });
}

/** Stores a new session (in a server action). */
export async function startSession(session: SessionTokens): Promise<void> {
  writeSession(await cookies(), await cookieBase(), session);
}

/** Forgets the session (in a server action). */
export async function endSession(): Promise<void> {
  eraseSession(await cookies(), await cookieBase());
}

/** True when the stated expiry is (almost) reached. Informational only. */
export function expiresSoon(expiresCookie: string | undefined, now = Date.now()): boolean {
  if (expiresCookie === undefined || expiresCookie === "") return false;
  const expiresAt = Number(expiresCookie);
  return Number.isFinite(expiresAt) && expiresAt - REFRESH_MARGIN_MS <= now;
}

/** Only same-site relative paths may be redirect targets. */
export function safeNext(next: string | null | undefined): string {
  return next !== null && next !== undefined && next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/\\")
    ? next
    : "/licenses";
}

function refreshUrl(path: string): string {
  return `/api/refresh?next=${encodeURIComponent(path)}`;
}

/**
 * The access token for a page at `path`, or a redirect: to sign-in without
 * a session, or once through /api/refresh (a route handler may set cookies;
 * a page may not) when the token's stated expiry is near. `refreshed` is
 * true when the page was reached from /api/refresh, so it never loops.
 */
export async function pageSession(path: string, refreshed: boolean): Promise<string> {
  const jar = await cookies();
  const accessToken = jar.get(ACCESS_COOKIE)?.value;
  if (!accessToken) redirect("/sign-in");
  if (!refreshed && expiresSoon(jar.get(EXPIRES_COOKIE)?.value)) redirect(refreshUrl(path));
  return accessToken;
}

/**
 * What a page does with a failed gateway call: a token the gateway no longer
 * accepts goes through /api/refresh once, then to sign-in; anything else is
 * an error code for the page to show.
 */
export function pageFailure(error: unknown, path: string, refreshed: boolean): ErrorCode {
  const failure = toGatewayError(error);
  if (failure.reason === "TOKEN_INVALID" && !refreshed) redirect(refreshUrl(path));
  if (failure.needsSignIn) redirect("/sign-in?error=session-ended");
  logFailure(path, failure);
  return codeFor(failure);
}

/** The access token for a server action, or a redirect to sign-in. */
export async function actionSession(): Promise<string> {
  const accessToken = (await cookies()).get(ACCESS_COOKIE)?.value;
  if (!accessToken) redirect("/sign-in?error=session-ended");
  return accessToken;
}

/**
 * What a server action does with a failed gateway call: an ended session
 * goes through /api/refresh back to `path` (the user submits again with the
 * new session), anything else is an error code for the form to show.
 */
export function actionFailure(error: unknown, path: string): ErrorCode {
  const failure = toGatewayError(error);
  if (failure.reason === "TOKEN_INVALID") redirect(refreshUrl(path));
  if (failure.needsSignIn) redirect("/sign-in?error=session-ended");
  logFailure(path, failure);
  return codeFor(failure);
}

/** The code and reason only: never a message with user input, nor a secret. */
export function logFailure(where: string, failure: GatewayError): void {
  console.warn(`${where}: ${failure.codeName} ${failure.reason ?? "-"}`);
}
