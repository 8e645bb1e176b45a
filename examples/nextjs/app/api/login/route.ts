// POST /api/login (form): signs in through the gateway and stores the session
// in httpOnly cookies. Edge runtime: only `fetch` is used.
import type { NextRequest, NextResponse } from "next/server";
import { toGatewayError } from "@licensing-gateway/client";

import { clientAddress, gateway } from "@/lib/gateway";
import { seeOther, setSession } from "@/lib/session";

export const runtime = "edge";

export async function POST(request: NextRequest): Promise<NextResponse> {
  const form = await request.formData();
  const email = String(form.get("email") ?? "");
  const password = String(form.get("password") ?? "");
  try {
    const session = await gateway().login(email, password, clientAddress(request));
    const response = seeOther("/profile");
    setSession(response, request, session);
    return response;
  } catch (error) {
    const failure = toGatewayError(error);
    console.warn(`login failed: ${failure.codeName} ${failure.reason ?? "-"}`);
    return seeOther("/", { error: failure.message, email });
  }
}
