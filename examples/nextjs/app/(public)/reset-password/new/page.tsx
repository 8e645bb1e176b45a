// Choosing a new password after following the reset mail's link (see
// ../route.ts: the link's token waits in a sealed cookie).
import type { Metadata } from "next";

import { Banners } from "@/components/banners";
import { pendingReset } from "@/lib/sealed";
import { ResetPasswordForm } from "./reset-password-form";

export const dynamic = "force-dynamic";
export const metadata: Metadata = { title: "Choose a new password" };

export default async function ResetPasswordPage({
  searchParams,
}: {
  searchParams: Promise<{ error?: string | string[] }>;
}) {
  const { error } = await searchParams;
  const pending = await pendingReset.read();
  return (
    <>
      <div className="page-title">
        <h1>Choose a new password</h1>
      </div>
      <Banners error={error ?? (pending === undefined ? "reset-link-missing" : undefined)} />
      {pending === undefined ? (
        <p>
          <a className="button" href="/forgot-password">
            Send me a new link
          </a>
        </p>
      ) : (
        <section className="card">
          <ResetPasswordForm />
        </section>
      )}
    </>
  );
}
