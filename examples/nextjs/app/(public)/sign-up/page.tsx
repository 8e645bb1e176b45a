import type { Metadata } from "next";

import { SignUpForm } from "./sign-up-form";

export const metadata: Metadata = { title: "Create account" };

export default function SignUpPage() {
  return (
    <>
      <div className="page-title">
        <h1>Create your account</h1>
        <p>Your licenses, machines and downloads in one place.</p>
      </div>
      <section className="card">
        <SignUpForm />
      </section>
      <p className="muted small">
        Already have an account? <a href="/sign-in">Sign in</a>.
      </p>
    </>
  );
}
