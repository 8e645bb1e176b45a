// The second sign-in step. The email and password wait in a sealed,
// httpOnly cookie (lib/sealed.ts) for five minutes, so the user types only
// the code; `?method=recovery` asks for a recovery code instead.
import type { Metadata } from "next";
import Link from "next/link";
import { redirect } from "next/navigation";

import { pendingSignIn } from "@/lib/sealed";
import { SecondFactorForm } from "./second-factor-form";

export const dynamic = "force-dynamic";
export const metadata: Metadata = { title: "Two-factor sign-in" };

export default async function TwoFactorSignIn({
  searchParams,
}: {
  searchParams: Promise<{ method?: string | string[] }>;
}) {
  const { method } = await searchParams;
  if ((await pendingSignIn.read()) === undefined) redirect("/sign-in?error=sign-in-expired");
  const recovery = method === "recovery";
  return (
    <>
      <div className="page-title">
        <h1>{recovery ? "Use a recovery code" : "Two-factor authentication"}</h1>
        <p>
          {recovery
            ? "Enter one of the recovery codes you saved when you turned on two-factor authentication. Each code works once."
            : "Enter the six-digit code from your authenticator app."}
        </p>
      </div>
      <section className="card">
        <SecondFactorForm recovery={recovery} />
      </section>
      <div className="form-links">
        {recovery ? (
          <Link href="/sign-in/two-factor">Use your authenticator app instead</Link>
        ) : (
          <Link href="/sign-in/two-factor?method=recovery" data-testid="use-recovery-code">
            Lost your phone? Use a recovery code
          </Link>
        )}
        <Link href="/sign-in">Start over</Link>
      </div>
    </>
  );
}
