"use client";
import Link from "next/link";
import { useActionState } from "react";

import { signIn, type SignInState } from "@/app/actions/session";
import { Banners } from "@/components/banners";
import { SubmitButton } from "@/components/submit-button";

export function SignInForm() {
  const [state, action] = useActionState<SignInState, FormData>(signIn, {});
  return (
    <form className="stack" action={action} data-testid="sign-in-form">
      <Banners error={state.error} />
      <label>
        Email
        <input name="email" type="email" autoComplete="username" required maxLength={256} defaultValue={state.email} key={state.email} />
      </label>
      <label>
        Password
        <input name="password" type="password" autoComplete="current-password" required minLength={8} maxLength={256} />
      </label>
      <SubmitButton className="full" pendingText="Signing in…" testId="sign-in">
        Sign in
      </SubmitButton>
      <div className="form-links">
        <Link href="/forgot-password">Forgot your password?</Link>
      </div>
    </form>
  );
}
