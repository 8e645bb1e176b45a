// The session lives in three httpOnly, SameSite=Lax cookies. They are
// `secure` everywhere except plain-http localhost development.
import { NextResponse, type NextRequest } from "next/server";
import type { SessionTokens } from "@licensing-gateway/client";

export const ACCESS_COOKIE = "lgw_access";
export const REFRESH_COOKIE = "lgw_refresh";
export const EXPIRES_COOKIE = "lgw_expires";

/** The refresh token is only ever sent to the route handlers that use it. */
const REFRESH_PATH = "/api/";
const THIRTY_DAYS = 30 * 24 * 60 * 60;
/** Refresh this long before the access token's stated expiry. */
export const REFRESH_MARGIN_MS = 30_000;

/** Plain http is allowed only for local development. */
export function secureCookies(request: NextRequest): boolean {
  const host = (request.headers.get("host") ?? request.nextUrl.host).replace(/:\d+$/, "");
  const local = host === "localhost" || host === "127.0.0.1" || host === "[::1]";
  return !(request.nextUrl.protocol === "http:" && local);
}

/**
 * A 303 to a same-site path with a relative `Location`, so the browser stays
 * on the host it used (request.url may name another, e.g. localhost for
 * 127.0.0.1, and cookies are per host).
 */
export function seeOther(path: string, params: Record<string, string> = {}): NextResponse {
  const query = new URLSearchParams(params).toString();
  const location = query === "" ? path : `${path}${path.includes("?") ? "&" : "?"}${query}`;
  return new NextResponse(null, { status: 303, headers: { location } });
}

export function setSession(response: NextResponse, request: NextRequest, session: SessionTokens): void {
  const base = { httpOnly: true, secure: secureCookies(request), sameSite: "lax" as const };
  response.cookies.set(ACCESS_COOKIE, session.accessToken, { ...base, path: "/", maxAge: THIRTY_DAYS });
  if (session.refreshToken !== "") {
    response.cookies.set(REFRESH_COOKIE, session.refreshToken, {
      ...base,
      path: REFRESH_PATH,
      maxAge: THIRTY_DAYS,
    });
  }
  if (session.expiresAt !== undefined) {
    response.cookies.set(EXPIRES_COOKIE, String(session.expiresAt.getTime()), {
      ...base,
      path: "/",
      maxAge: THIRTY_DAYS,
    });
  } else {
    response.cookies.delete({ name: EXPIRES_COOKIE, path: "/" });
  }
}

export function clearSession(response: NextResponse, request: NextRequest): void {
  const base = { httpOnly: true, secure: secureCookies(request), sameSite: "lax" as const, maxAge: 0 };
  response.cookies.set(ACCESS_COOKIE, "", { ...base, path: "/" });
  response.cookies.set(REFRESH_COOKIE, "", { ...base, path: REFRESH_PATH });
  response.cookies.set(EXPIRES_COOKIE, "", { ...base, path: "/" });
}

/** True when the stated expiry is (almost) reached. Informational only. */
export function expiresSoon(expiresCookie: string | undefined, now = Date.now()): boolean {
  if (expiresCookie === undefined) return false;
  const expiresAt = Number(expiresCookie);
  return Number.isFinite(expiresAt) && expiresAt - REFRESH_MARGIN_MS <= now;
}

/** Only same-site relative paths may be redirect targets. */
export function safeNext(next: string | null | undefined): string {
  return next !== null && next !== undefined && next.startsWith("/") && !next.startsWith("//") ? next : "/profile";
}
