// GET /api/refresh?next=/licenses: trades the refresh token for a new session
// (RefreshSession) and goes back; on failure, to the sign-in page. Pages come
// here because a route handler may set cookies and a page may not; the
// refresh token's cookie is sent to /api/ only.
//
// Edge runtime, to show the client needs nothing but `fetch` (Next.js 16
// calls the edge runtime deprecated; deleting the line moves it to Node).
import { NextResponse, type NextRequest } from "next/server";
import { toGatewayError } from "@licensing-gateway/client";

import { gateway } from "@/lib/gateway";
import { REFRESH_COOKIE, eraseSession, logFailure, safeNext, secureCookies, writeSession } from "@/lib/session";

export const runtime = "edge";

export async function GET(request: NextRequest): Promise<NextResponse> {
  const next = safeNext(request.nextUrl.searchParams.get("next"));
  const base = { httpOnly: true as const, secure: secureCookies(request.headers.get("host")), sameSite: "lax" as const };
  const refreshToken = request.cookies.get(REFRESH_COOKIE)?.value;
  if (refreshToken) {
    try {
      const session = await gateway().refresh(refreshToken);
      const response = seeOther(`${next}${next.includes("?") ? "&" : "?"}refreshed=1`);
      writeSession(response.cookies, base, session);
      return response;
    } catch (error) {
      logFailure("refresh", toGatewayError(error));
    }
  }
  const response = seeOther("/sign-in?error=session-ended");
  eraseSession(response.cookies, base);
  return response;
}

/**
 * A 303 with a relative `Location`, so the browser stays on the host it used
 * (request.url may name another, e.g. localhost for 127.0.0.1, and cookies
 * are per host).
 */
function seeOther(location: string): NextResponse {
  return new NextResponse(null, { status: 303, headers: { location } });
}
