// GET /reset-password?token=...&userId=... : where the reset mail's link
// lands. The token is a secret, so it does not stay in the address bar, the
// history or the page: it goes into a sealed httpOnly cookie for this path
// (lib/sealed.ts) and the browser moves on to the form at a clean URL. The
// link may name the user by `userId` (as Cryptlex's and the sandbox's mail
// do) or by `email`.
import { redirect } from "next/navigation";
import type { NextRequest } from "next/server";

import { pendingReset } from "@/lib/sealed";

export const dynamic = "force-dynamic";

export async function GET(request: NextRequest): Promise<never> {
  const query = request.nextUrl.searchParams;
  const token = query.get("token") ?? "";
  const userId = query.get("userId") ?? query.get("user_id") ?? query.get("id") ?? "";
  const email = query.get("email") ?? "";
  if (token === "" || token.length > 2048 || (userId === "" && email === "")) {
    await pendingReset.clear();
    redirect("/reset-password/new?error=reset-link-invalid");
  }
  await pendingReset.write(userId !== "" ? { userId, token } : { email, token });
  redirect("/reset-password/new");
}
