"use client";
import { useActionState } from "react";

import { signUp, type SignUpState } from "@/app/actions/session";
import { Banners } from "@/components/banners";
import { SubmitButton } from "@/components/submit-button";

export function SignUpForm() {
  const [state, action] = useActionState<SignUpState, FormData>(signUp, {});
  // `key` makes the inputs take the echoed values after a refused attempt.
  const key = `${state.email}|${state.firstName}|${state.lastName}`;
  return (
    <form className="stack" action={action} data-testid="sign-up-form">
      <Banners error={state.error} />
      <div className="grid two">
        <label>
          First name
          <input name="firstName" type="text" autoComplete="given-name" required maxLength={256} defaultValue={state.firstName} key={`f${key}`} />
        </label>
        <label>
          Last name <span className="hint">optional</span>
          <input name="lastName" type="text" autoComplete="family-name" maxLength={256} defaultValue={state.lastName} key={`l${key}`} />
        </label>
      </div>
      <label>
        Email
        <input name="email" type="email" autoComplete="email" required maxLength={256} defaultValue={state.email} key={`e${key}`} />
      </label>
      <label>
        Password <span className="hint">at least 8 characters</span>
        <input name="password" type="password" autoComplete="new-password" required minLength={8} maxLength={256} />
      </label>
      <SubmitButton className="full" pendingText="Creating your account…" testId="sign-up">
        Create account
      </SubmitButton>
    </form>
  );
}
