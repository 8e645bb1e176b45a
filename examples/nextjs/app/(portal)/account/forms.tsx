"use client";
// The account page's forms. Each shows its own error (a code from the server
// action, looked up in lib/messages.ts); success reloads the page with a notice.
import { useActionState } from "react";

import {
  changePassword,
  createRecoveryCodes,
  disableTwoFactor,
  updateProfile,
  type DisableState,
  type PasswordState,
  type ProfileState,
  type RecoveryCodesState,
} from "@/app/actions/account";
import { Banners } from "@/components/banners";
import { SubmitButton } from "@/components/submit-button";

export function ProfileForm({ firstName, lastName }: { firstName: string; lastName: string }) {
  const [state, action] = useActionState<ProfileState, FormData>(updateProfile, {});
  const first = state.firstName ?? firstName;
  const last = state.lastName ?? lastName;
  return (
    <form className="stack" action={action} data-testid="profile-form">
      <Banners error={state.error} />
      <label>
        First name
        <input name="firstName" type="text" autoComplete="given-name" required maxLength={256} defaultValue={first} key={`f${first}`} />
      </label>
      <label>
        Last name
        <input name="lastName" type="text" autoComplete="family-name" maxLength={256} defaultValue={last} key={`l${last}`} />
      </label>
      <div className="row end">
        <SubmitButton pendingText="Saving…" testId="save-profile">
          Save
        </SubmitButton>
      </div>
    </form>
  );
}

export function PasswordForm() {
  const [state, action] = useActionState<PasswordState, FormData>(changePassword, {});
  return (
    <form className="stack" action={action} data-testid="password-form">
      <Banners error={state.error} />
      <label>
        Current password
        <input name="current" type="password" autoComplete="current-password" required maxLength={256} />
      </label>
      <label>
        New password <span className="hint">at least 8 characters</span>
        <input name="password" type="password" autoComplete="new-password" required minLength={8} maxLength={256} />
      </label>
      <label>
        Repeat the new password
        <input name="confirm" type="password" autoComplete="new-password" required minLength={8} maxLength={256} />
      </label>
      <div className="row end">
        <SubmitButton pendingText="Changing…" testId="change-password">
          Change password
        </SubmitButton>
      </div>
    </form>
  );
}

export function CodeInput() {
  return (
    <label>
      Code from your app
      <input
        name="code"
        type="text"
        inputMode="numeric"
        autoComplete="one-time-code"
        pattern="[0-9 ]{6,7}"
        maxLength={7}
        required
        className="code-input"
      />
    </label>
  );
}

/** The recovery codes, once, with what to do with them. */
export function RecoveryCodes({ codes }: { codes: string[] }) {
  return (
    <div className="banner warning" data-testid="recovery-codes-panel">
      <strong>Save these recovery codes now.</strong> Each one signs you in once if you lose your phone. They are shown only
      this once.
      <ul className="recovery-codes" data-testid="recovery-codes">
        {codes.map((code) => (
          <li key={code}>{code}</li>
        ))}
      </ul>
    </div>
  );
}

export function RecoveryCodesForm() {
  const [state, action] = useActionState<RecoveryCodesState, FormData>(createRecoveryCodes, {});
  if (state.recoveryCodes) return <RecoveryCodes codes={state.recoveryCodes} />;
  return (
    <form className="stack" action={action} data-testid="recovery-codes-form">
      <Banners error={state.error} />
      <CodeInput />
      <div className="row end">
        <SubmitButton className="secondary" pendingText="Making codes…" testId="new-recovery-codes">
          Make new recovery codes
        </SubmitButton>
      </div>
    </form>
  );
}

export function DisableTwoFactorForm() {
  const [state, action] = useActionState<DisableState, FormData>(disableTwoFactor, {});
  return (
    <form className="stack" action={action} data-testid="disable-two-factor-form">
      <Banners error={state.error} />
      <CodeInput />
      <div className="row end">
        <SubmitButton className="danger" pendingText="Turning off…" testId="disable-two-factor">
          Turn off two-factor
        </SubmitButton>
      </div>
    </form>
  );
}
