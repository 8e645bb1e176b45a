"use client";
import { useActionState } from "react";

import { signInSecondFactor, type SecondFactorState } from "@/app/actions/session";
import { Banners } from "@/components/banners";
import { SubmitButton } from "@/components/submit-button";

export function SecondFactorForm({ recovery }: { recovery: boolean }) {
  const [state, action] = useActionState<SecondFactorState, FormData>(signInSecondFactor, {});
  return (
    <form className="stack" action={action} data-testid="second-factor-form">
      <Banners error={state.error} />
      <input type="hidden" name="method" value={recovery ? "recovery" : "code"} />
      {recovery ? (
        <label>
          Recovery code
          <input name="code" type="text" autoComplete="off" required maxLength={256} className="code-input" spellCheck={false} />
        </label>
      ) : (
        <label>
          Code
          <input
            name="code"
            type="text"
            inputMode="numeric"
            autoComplete="one-time-code"
            pattern="[0-9 ]{6,7}"
            maxLength={7}
            required
            autoFocus
            className="code-input"
          />
        </label>
      )}
      <SubmitButton className="full" pendingText="Checking…" testId="verify">
        Verify and sign in
      </SubmitButton>
    </form>
  );
}
