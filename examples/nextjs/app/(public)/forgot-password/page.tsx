import type { Metadata } from "next";

import { ForgotPasswordForm } from "./forgot-password-form";

export const metadata: Metadata = { title: "Forgot password" };

export default function ForgotPasswordPage() {
  return (
    <>
      <div className="page-title">
        <h1>Forgot your password?</h1>
        <p>Enter your email address and we&apos;ll send you a link to choose a new one.</p>
      </div>
      <section className="card">
        <ForgotPasswordForm />
      </section>
      <p className="muted small">
        Remembered it? <a href="/sign-in">Sign in</a>.
      </p>
    </>
  );
}
