// POST /api/logout (form): revokes the access token at Cryptlex through the
// gateway (Logout) and clears the cookies whatever the outcome.
import type { NextRequest, NextResponse } from "next/server";
import { toGatewayError } from "@licensing-gateway/client";

import { gateway } from "@/lib/gateway";
import { ACCESS_COOKIE, clearSession, seeOther } from "@/lib/session";

export const runtime = "edge";

export async function POST(request: NextRequest): Promise<NextResponse> {
  const accessToken = request.cookies.get(ACCESS_COOKIE)?.value;
  if (accessToken) {
    try {
      await gateway().logout(accessToken);
    } catch (error) {
      // An already expired session is as good as logged out.
      const failure = toGatewayError(error);
      console.warn(`logout: ${failure.codeName} ${failure.reason ?? "-"}`);
    }
  }
  const response = seeOther("/", { notice: "You have been signed out." });
  clearSession(response, request);
  return response;
}
