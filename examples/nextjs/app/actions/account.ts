"use server";
// Server actions of the account page: profile, password and two-factor
// authentication. Each acts with the access token from the httpOnly cookie.
import { redirect } from "next/navigation";
import QRCode from "qrcode";

import { field, isTwoFactorCode, normalizeCode } from "@/lib/forms";
import { gateway } from "@/lib/gateway";
import type { ErrorCode } from "@/lib/messages";
import { actionFailure, actionSession } from "@/lib/session";

export interface ProfileState {
  error?: ErrorCode;
  firstName?: string;
  lastName?: string;
}

/** UpdateProfile with the update mask `first_name,last_name`. */
export async function updateProfile(_previous: ProfileState, form: FormData): Promise<ProfileState> {
  const accessToken = await actionSession();
  const firstName = field(form, "firstName").trim();
  const lastName = field(form, "lastName").trim();
  if (firstName === "") return { error: "first-name-required", firstName, lastName };
  try {
    await gateway().updateProfile(accessToken, { firstName, lastName });
  } catch (error) {
    return { error: actionFailure(error, "/account"), firstName, lastName };
  }
  redirect("/account?notice=profile-saved");
}

export interface PasswordState {
  error?: ErrorCode;
}

export async function changePassword(_previous: PasswordState, form: FormData): Promise<PasswordState> {
  const accessToken = await actionSession();
  const current = field(form, "current");
  const next = field(form, "password");
  if (current === "") return { error: "wrong-current-password" };
  if (next.length < 8) return { error: "password-too-short" };
  if (next !== field(form, "confirm")) return { error: "passwords-differ" };
  try {
    await gateway().changePassword(accessToken, current, next);
  } catch (error) {
    return { error: actionFailure(error, "/account") };
  }
  redirect("/account?notice=password-changed");
}

export interface EnrollmentState {
  error?: ErrorCode;
  /** The otpauth URL as a QR code (an SVG data URL), made here on the server. */
  qrCode?: string;
  /** The base32 secret, for typing into an authenticator app by hand. */
  secret?: string;
}

/**
 * StartTwoFactorEnrollment: a new secret, shown once as a QR code and as
 * text. Started by a button (a POST), never by loading a page, so a reload or
 * a prefetch does not replace the secret behind the user's back.
 */
export async function startEnrollment(_previous: EnrollmentState): Promise<EnrollmentState> {
  const accessToken = await actionSession();
  try {
    const { otpauthUrl, secret } = await gateway().startTwoFactorEnrollment(accessToken);
    const svg = await QRCode.toString(otpauthUrl, { type: "svg", errorCorrectionLevel: "M", margin: 1 });
    return { qrCode: `data:image/svg+xml;base64,${Buffer.from(svg).toString("base64")}`, secret };
  } catch (error) {
    return { error: actionFailure(error, "/account/two-factor") };
  }
}

export interface RecoveryCodesState {
  error?: ErrorCode;
  /** Shown once, right after they are made; never stored by the site. */
  recoveryCodes?: string[];
  /** Two-factor is on (EnableTwoFactor succeeded) even when making codes failed. */
  enabled?: boolean;
}

/**
 * EnableTwoFactor with the code from the app, then CreateRecoveryCodes with
 * the same code (Cryptlex does not make recovery codes by itself). When the
 * second call refuses the code (a service that allows each code once), two-
 * factor is on all the same and the page asks for a fresh code for the codes.
 */
export async function enableTwoFactor(_previous: RecoveryCodesState, form: FormData): Promise<RecoveryCodesState> {
  const accessToken = await actionSession();
  const code = normalizeCode(field(form, "code"));
  if (!isTwoFactorCode(code)) return { error: "invalid-two-factor-code" };
  const client = gateway();
  try {
    await client.enableTwoFactor(accessToken, code);
  } catch (error) {
    return { error: actionFailure(error, "/account/two-factor") };
  }
  try {
    return { enabled: true, recoveryCodes: await client.createRecoveryCodes(accessToken, code) };
  } catch (error) {
    return { enabled: true, error: actionFailure(error, "/account/two-factor") };
  }
}

/** CreateRecoveryCodes: a new set; the old codes stop working. */
export async function createRecoveryCodes(_previous: RecoveryCodesState, form: FormData): Promise<RecoveryCodesState> {
  const accessToken = await actionSession();
  const code = normalizeCode(field(form, "code"));
  if (!isTwoFactorCode(code)) return { error: "invalid-two-factor-code" };
  try {
    return { enabled: true, recoveryCodes: await gateway().createRecoveryCodes(accessToken, code) };
  } catch (error) {
    return { error: actionFailure(error, "/account") };
  }
}

export interface DisableState {
  error?: ErrorCode;
}

export async function disableTwoFactor(_previous: DisableState, form: FormData): Promise<DisableState> {
  const accessToken = await actionSession();
  const code = normalizeCode(field(form, "code"));
  if (!isTwoFactorCode(code)) return { error: "invalid-two-factor-code" };
  try {
    await gateway().disableTwoFactor(accessToken, code);
  } catch (error) {
    return { error: actionFailure(error, "/account") };
  }
  redirect("/account?notice=two-factor-disabled");
}
