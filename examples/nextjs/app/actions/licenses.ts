"use server";
// Deactivating a machine from its license's page.
import { redirect } from "next/navigation";

import { field, isId } from "@/lib/forms";
import { gateway } from "@/lib/gateway";
import type { ErrorCode } from "@/lib/messages";
import { actionFailure, actionSession } from "@/lib/session";

/**
 * DeactivateMachine, confirmed in the page's dialog. The gateway checks that
 * the machine is the caller's; the outcome goes back to the license page as
 * a notice or error code (the activation id never goes into a URL: with it,
 * anyone could deactivate the machine at Cryptlex directly).
 */
export async function deactivateMachine(form: FormData): Promise<void> {
  const licenseId = field(form, "licenseId");
  const activationId = field(form, "activationId");
  if (!isId(licenseId)) redirect("/licenses?error=not-found");
  const page = `/licenses/${licenseId}`;
  if (!isId(activationId)) redirect(`${page}?error=not-found`);
  const accessToken = await actionSession();
  let outcome: { notice: "deactivated" } | { error: ErrorCode };
  try {
    await gateway().deactivateMachine(accessToken, activationId);
    outcome = { notice: "deactivated" };
  } catch (error) {
    outcome = { error: actionFailure(error, page) };
  }
  redirect(`${page}?${new URLSearchParams(outcome)}`);
}
