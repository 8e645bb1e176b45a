"use client";
// The enrolment steps, each a server action: start (QR code and secret),
// confirm with a code (two-factor on, recovery codes made), show the codes.
// The secret lives only in this page's state: a reload starts over.
import Link from "next/link";
import { useActionState } from "react";

import { enableTwoFactor, startEnrollment, type EnrollmentState, type RecoveryCodesState } from "@/app/actions/account";
import { Banners } from "@/components/banners";
import { SubmitButton } from "@/components/submit-button";
import { CodeInput, RecoveryCodes } from "../forms";

export function TwoFactorSetup() {
  const [enrollment, start] = useActionState<EnrollmentState>(startEnrollment, {});
  const [confirmed, confirm] = useActionState<RecoveryCodesState, FormData>(enableTwoFactor, {});

  if (confirmed.enabled) {
    return (
      <section className="card" data-testid="two-factor-done">
        <h2>Two-factor authentication is on</h2>
        {confirmed.recoveryCodes ? (
          <RecoveryCodes codes={confirmed.recoveryCodes} />
        ) : (
          <p>
            Now make your recovery codes on the account page (they need a fresh code from your app), so you can still sign
            in if you lose your phone.
          </p>
        )}
        <Link className="button" href="/account?notice=two-factor-enabled" data-testid="two-factor-finish">
          I&apos;ve saved them — back to my account
        </Link>
      </section>
    );
  }

  if (!enrollment.secret || !enrollment.qrCode) {
    return (
      <section className="card">
        <Banners error={enrollment.error} />
        <ol>
          <li>Install an authenticator app on your phone if you don&apos;t have one.</li>
          <li>Scan the QR code we show you next.</li>
          <li>Enter the six-digit code the app shows.</li>
        </ol>
        <form action={start}>
          <SubmitButton pendingText="Preparing…" testId="start-two-factor">
            Show my QR code
          </SubmitButton>
        </form>
      </section>
    );
  }

  return (
    <section className="card">
      <h2>Scan this QR code</h2>
      <div className="qr">
        {/* eslint-disable-next-line @next/next/no-img-element -- a data URL made on the server */}
        <img src={enrollment.qrCode} alt="QR code for your authenticator app" data-testid="qr-code" />
        <div>
          <p>Open your authenticator app, add an account and scan the code.</p>
          <p className="muted small">Can&apos;t scan it? Enter this key in the app instead (time-based, 6 digits):</p>
          <p className="secret" data-testid="totp-secret">
            {enrollment.secret.replace(/(.{4})/g, "$1 ").trim()}
          </p>
          <form className="stack" action={confirm} data-testid="enable-two-factor-form">
            <Banners error={confirmed.error} />
            <CodeInput />
            <SubmitButton pendingText="Checking…" testId="enable-two-factor">
              Turn on two-factor authentication
            </SubmitButton>
          </form>
        </div>
      </div>
    </section>
  );
}
