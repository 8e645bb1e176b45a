// Sign-in: email and password; a two-factor account goes on to the code step.
import type { Metadata } from "next";
import { cookies } from "next/headers";
import { redirect } from "next/navigation";

import { Banners } from "@/components/banners";
import { ACCESS_COOKIE } from "@/lib/session";
import { SignInForm } from "./sign-in-form";

export const dynamic = "force-dynamic";
export const metadata: Metadata = { title: "Sign in" };

export default async function SignInPage({
  searchParams,
}: {
  searchParams: Promise<{ error?: string | string[]; notice?: string | string[] }>;
}) {
  const { error, notice } = await searchParams;
  if ((await cookies()).has(ACCESS_COOKIE) && !error && !notice) redirect("/licenses");
  return (
    <>
      <div className="page-title">
        <h1>Sign in</h1>
        <p>Manage your licenses, machines and downloads.</p>
      </div>
      <Banners error={error} notice={notice} />
      <section className="card">
        <SignInForm />
      </section>
      <p className="muted small">
        New here? <a href="/sign-up">Create an account</a>.
      </p>
      {process.env.PORTAL_SHOW_DEMO_USER === "1" ? (
        <p className="muted small">
          Sandbox demo user: <code>demo@example.com</code> / <code>demo-password</code>.
        </p>
      ) : null}
    </>
  );
}
