"use client";
import { useActionState } from "react";

import { requestPasswordReset, type ResetRequestState } from "@/app/actions/session";
import { Banners } from "@/components/banners";
import { SubmitButton } from "@/components/submit-button";

export function ForgotPasswordForm() {
  const [state, action] = useActionState<ResetRequestState, FormData>(requestPasswordReset, {});
  if (state.sent) {
    // The same words whether or not the account exists.
    return (
      <div role="status" data-testid="reset-sent">
        <h2>Check your email</h2>
        <p>
          If an account exists for that address, we&apos;ve sent it a link to reset the password. The link works for one
          hour. Nothing there? Check the spam folder, or try again in a few minutes.
        </p>
      </div>
    );
  }
  return (
    <form className="stack" action={action} data-testid="forgot-password-form">
      <Banners error={state.error} />
      <label>
        Email
        <input name="email" type="email" autoComplete="email" required maxLength={256} />
      </label>
      <SubmitButton className="full" pendingText="Sending…" testId="send-reset">
        Send reset link
      </SubmitButton>
    </form>
  );
}
