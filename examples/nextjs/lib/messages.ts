// Every message this site shows for an error or a notice, chosen by the site
// itself. Pages and forms only ever carry a CODE (in a redirect's query, or in
// a form's state); the text comes from these fixed tables. An unknown code
// (say, `?error=<anything an attacker likes>` in a link) shows the generic
// message, never the text of the link. (No imports: client components use it.)

export const ERROR_MESSAGES = {
  "invalid-credentials": "That email and password don't match. Check them and try again.",
  "session-ended": "Your session has ended. Please sign in again.",
  "sign-in-expired": "Your sign-in took too long. Please enter your email and password again.",
  "invalid-two-factor-code": "That code didn't work. Check your authenticator app and try again.",
  "invalid-recovery-code": "That recovery code didn't work. Each code works only once; check it and try again.",
  "two-factor-not-enabled": "Two-factor authentication isn't turned on for your account.",
  "two-factor-already-enabled": "Two-factor authentication is already on.",
  "wrong-current-password": "Your current password isn't right. Check it and try again.",
  "passwords-differ": "The two new passwords don't match.",
  "password-too-short": "Choose a password of at least 8 characters.",
  "reset-link-invalid": "This password reset link has expired or has already been used. Please ask for a new one.",
  "reset-link-missing": "Open the link from your password reset email to choose a new password.",
  "email-taken": "An account with this email already exists. Try signing in instead.",
  "sign-up-disabled": "Sign-up is not available at the moment.",
  "invalid-form": "Please check the form and try again.",
  "first-name-required": "Please enter your first name.",
  "deactivation-limit":
    "This license has used all of its deactivations, so this machine can't be deactivated here. Please contact support and we'll move the license for you.",
  "not-found": "We couldn't find that. It may have been removed, or it belongs to another account.",
  "too-many-attempts": "Too many attempts from this account or network. Please wait a minute and try again.",
  busy: "We're handling a lot of requests right now. Please try again in a moment.",
  unavailable: "The licensing service is temporarily unavailable. Please try again in a moment.",
  generic: "Something went wrong. Please try again.",
} as const;

export type ErrorCode = keyof typeof ERROR_MESSAGES;

export const NOTICE_MESSAGES = {
  "signed-out": "You have been signed out.",
  welcome: "Welcome! Your account is ready.",
  "profile-saved": "Your profile has been saved.",
  "password-changed": "Your password has been changed.",
  "password-reset": "Your password has been changed. Sign in with your new password.",
  "two-factor-enabled": "Two-factor authentication is on.",
  "two-factor-disabled": "Two-factor authentication is off.",
  deactivated: "The machine has been deactivated. Its activation is free for another machine.",
} as const;

export type NoticeCode = keyof typeof NOTICE_MESSAGES;

function has<T extends object>(table: T, key: string): key is Extract<keyof T, string> {
  return Object.prototype.hasOwnProperty.call(table, key);
}

/** The message for an error code from anywhere (a URL included). */
export function errorMessage(code: string | string[] | undefined | null): string | undefined {
  if (code === undefined || code === null || code === "") return undefined;
  const key = Array.isArray(code) ? code[0] ?? "" : code;
  return has(ERROR_MESSAGES, key) ? ERROR_MESSAGES[key] : ERROR_MESSAGES.generic;
}

/** The message for a notice code; unknown notices show nothing. */
export function noticeMessage(code: string | string[] | undefined | null): string | undefined {
  const key = Array.isArray(code) ? code[0] : code;
  return key && has(NOTICE_MESSAGES, key) ? NOTICE_MESSAGES[key] : undefined;
}
