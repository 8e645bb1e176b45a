// GET /api/refresh?next=/profile: trades the refresh token for a new session
// (RefreshSession) and goes back; on failure, back to the sign-in form.
import type { NextRequest, NextResponse } from "next/server";
import { toGatewayError } from "@licensing-gateway/client";

import { gateway } from "@/lib/gateway";
import { REFRESH_COOKIE, clearSession, safeNext, seeOther, setSession } from "@/lib/session";

export const runtime = "edge";

export async function GET(request: NextRequest): Promise<NextResponse> {
  const next = safeNext(request.nextUrl.searchParams.get("next"));
  const refreshToken = request.cookies.get(REFRESH_COOKIE)?.value;
  if (!refreshToken) {
    return signIn(request, "Your session has ended. Please sign in again.");
  }
  try {
    const session = await gateway().refresh(refreshToken);
    const response = seeOther(next, { refreshed: "1" });
    setSession(response, request, session);
    return response;
  } catch (error) {
    return signIn(request, toGatewayError(error).message);
  }
}

function signIn(request: NextRequest, message: string): NextResponse {
  const response = seeOther("/", { error: message });
  clearSession(response, request);
  return response;
}
