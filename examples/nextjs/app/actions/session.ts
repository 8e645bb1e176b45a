"use server";
// Server actions for signing in and out, signing up and resetting a
// password. They run on the server only: the gateway, the tokens and the
// pending credentials never reach the browser's JavaScript, and errors come
// back as the site's own codes (lib/messages.ts), never as text from a URL.
//
// Next.js checks that a server action is posted from this site's own origin.
import { cookies, headers } from "next/headers";
import { redirect } from "next/navigation";
import { toGatewayError, type SessionTokens } from "@licensing-gateway/client";

import { codeFor } from "@/lib/error-codes";
import { field, isTwoFactorCode, normalizeCode } from "@/lib/forms";
import { clientAddress, gateway } from "@/lib/gateway";
import type { ErrorCode } from "@/lib/messages";
import { pendingReset, pendingSignIn } from "@/lib/sealed";
import { ACCESS_COOKIE, endSession, logFailure, startSession } from "@/lib/session";

export interface SignInState {
  error?: ErrorCode;
  /** What the user typed, to fill the form in again (never the password). */
  email?: string;
}

/** Email and password. A two-factor account goes on to /sign-in/two-factor
 * with the credentials sealed in a short-lived httpOnly cookie. */
export async function signIn(_previous: SignInState, form: FormData): Promise<SignInState> {
  const email = field(form, "email").trim();
  const password = field(form, "password");
  if (email === "" || password === "") return { error: "invalid-credentials", email };
  let session: SessionTokens;
  try {
    session = await gateway().login({ email, password }, clientAddress(await headers()));
  } catch (error) {
    const failure = toGatewayError(error);
    if (failure.needsTwoFactor) {
      await pendingSignIn.write({ email, password });
      redirect("/sign-in/two-factor");
    }
    logFailure("sign-in", failure);
    return { error: codeFor(failure), email };
  }
  await startSession(session);
  redirect("/licenses");
}

export interface SecondFactorState {
  error?: ErrorCode;
}

/** The second step: the pending email and password plus a code or a recovery code. */
export async function signInSecondFactor(_previous: SecondFactorState, form: FormData): Promise<SecondFactorState> {
  const pending = await pendingSignIn.read();
  if (pending === undefined) redirect("/sign-in?error=sign-in-expired");
  const recovery = field(form, "method") === "recovery";
  const code = recovery ? field(form, "code").trim() : normalizeCode(field(form, "code"));
  const wrong: ErrorCode = recovery ? "invalid-recovery-code" : "invalid-two-factor-code";
  if (recovery ? code === "" || code.length > 256 : !isTwoFactorCode(code)) return { error: wrong };

  let session: SessionTokens;
  try {
    session = await gateway().login(
      recovery ? { ...pending, twoFactorRecoveryCode: code } : { ...pending, twoFactorCode: code },
      clientAddress(await headers()),
    );
  } catch (error) {
    const failure = toGatewayError(error);
    logFailure("sign-in (second factor)", failure);
    if (failure.reason === "INVALID_TWO_FACTOR_CODE") return { error: wrong };
    if (failure.reason === "INVALID_CREDENTIALS") {
      // The password changed since the first step.
      await pendingSignIn.clear();
      redirect("/sign-in?error=invalid-credentials");
    }
    return { error: codeFor(failure) };
  }
  await pendingSignIn.clear();
  await startSession(session);
  redirect("/licenses");
}

export interface SignUpState {
  error?: ErrorCode;
  email?: string;
  firstName?: string;
  lastName?: string;
}

export async function signUp(_previous: SignUpState, form: FormData): Promise<SignUpState> {
  const input = {
    email: field(form, "email").trim(),
    password: field(form, "password"),
    firstName: field(form, "firstName").trim(),
    lastName: field(form, "lastName").trim(),
  };
  const echo = { email: input.email, firstName: input.firstName, lastName: input.lastName };
  if (input.firstName === "") return { error: "first-name-required", ...echo };
  if (input.password.length < 8) return { error: "password-too-short", ...echo };
  let session: SessionTokens;
  try {
    session = (await gateway().signUp(input, clientAddress(await headers()))).session;
  } catch (error) {
    const failure = toGatewayError(error);
    logFailure("sign-up", failure);
    return { error: codeFor(failure), ...echo };
  }
  await startSession(session);
  redirect("/licenses?notice=welcome");
}

/** Revokes the access token at Cryptlex (Logout) and clears the cookies
 * whatever the outcome: an already expired session is as good as gone. */
export async function signOut(): Promise<void> {
  const accessToken = (await cookies()).get(ACCESS_COOKIE)?.value;
  if (accessToken) {
    try {
      await gateway().logout(accessToken);
    } catch (error) {
      logFailure("sign-out", toGatewayError(error));
    }
  }
  await endSession();
  redirect("/sign-in?notice=signed-out");
}

export interface ResetRequestState {
  error?: ErrorCode;
  sent?: boolean;
}

/** Asks for a reset mail. The answer is the same whether or not the account
 * exists, and so is what the page says. */
export async function requestPasswordReset(_previous: ResetRequestState, form: FormData): Promise<ResetRequestState> {
  const email = field(form, "email").trim();
  if (email === "") return { error: "invalid-form" };
  try {
    await gateway().requestPasswordReset(email, clientAddress(await headers()));
  } catch (error) {
    const failure = toGatewayError(error);
    logFailure("password reset request", failure);
    return { error: codeFor(failure) };
  }
  return { sent: true };
}

export interface ResetState {
  error?: ErrorCode;
}

/** Sets the new password with the token the reset link left in its sealed cookie. */
export async function resetPassword(_previous: ResetState, form: FormData): Promise<ResetState> {
  const pending = await pendingReset.read();
  if (pending === undefined) return { error: "reset-link-missing" };
  const newPassword = field(form, "password");
  if (newPassword.length < 8) return { error: "password-too-short" };
  if (newPassword !== field(form, "confirm")) return { error: "passwords-differ" };
  const user = pending.userId ? { userId: pending.userId } : pending.email ? { email: pending.email } : undefined;
  if (user === undefined) return { error: "reset-link-invalid" };
  try {
    await gateway().resetPassword({ ...user, token: pending.token, newPassword }, clientAddress(await headers()));
  } catch (error) {
    const failure = toGatewayError(error);
    logFailure("password reset", failure);
    if (failure.reason === "RESET_TOKEN_INVALID") {
      // The link is spent: forget it, and say so on the page that offers a new one.
      await pendingReset.clear();
      redirect("/reset-password/new?error=reset-link-invalid");
    }
    return { error: codeFor(failure) };
  }
  await pendingReset.clear();
  redirect("/sign-in?notice=password-reset");
}
