"use client";
import Link from "next/link";
import { useActionState } from "react";

import { resetPassword, type ResetState } from "@/app/actions/session";
import { Banners } from "@/components/banners";
import { SubmitButton } from "@/components/submit-button";

export function ResetPasswordForm() {
  const [state, action] = useActionState<ResetState, FormData>(resetPassword, {});
  return (
    <form className="stack" action={action} data-testid="reset-password-form">
      <Banners error={state.error} />
      {state.error === "reset-link-invalid" || state.error === "reset-link-missing" ? (
        <p>
          <Link href="/forgot-password">Send me a new link</Link>
        </p>
      ) : null}
      <label>
        New password <span className="hint">at least 8 characters</span>
        <input name="password" type="password" autoComplete="new-password" required minLength={8} maxLength={256} />
      </label>
      <label>
        Repeat the new password
        <input name="confirm" type="password" autoComplete="new-password" required minLength={8} maxLength={256} />
      </label>
      <SubmitButton className="full" pendingText="Saving…" testId="reset-password">
        Set new password
      </SubmitButton>
    </form>
  );
}
