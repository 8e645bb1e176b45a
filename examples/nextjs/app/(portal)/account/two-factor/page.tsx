// Setting up two-factor authentication: a new secret as a QR code (and as
// text), a code from the app to confirm, then the recovery codes, once.
import type { Metadata } from "next";
import Link from "next/link";
import { redirect } from "next/navigation";

import { Banners } from "@/components/banners";
import { gateway, read } from "@/lib/gateway";
import type { ErrorCode } from "@/lib/messages";
import { pageFailure, pageSession } from "@/lib/session";
import { TwoFactorSetup } from "./setup";

export const dynamic = "force-dynamic";
export const metadata: Metadata = { title: "Set up two-factor authentication" };

const PATH = "/account/two-factor";

export default async function TwoFactorPage({ searchParams }: { searchParams: Promise<{ refreshed?: string }> }) {
  const { refreshed } = await searchParams;
  const accessToken = await pageSession(PATH, refreshed === "1");
  let enabled = false;
  let failure: ErrorCode | undefined;
  try {
    enabled = (await read(() => gateway().getProfile(accessToken))).twoFactorEnabled;
  } catch (caught) {
    failure = pageFailure(caught, PATH, refreshed === "1");
  }
  if (enabled) redirect("/account?error=two-factor-already-enabled");
  return (
    <>
      <Link className="back" href="/account">
        ← Account
      </Link>
      <div className="page-title">
        <h1>Set up two-factor authentication</h1>
        <p>After this, signing in needs your password and a six-digit code from your phone.</p>
      </div>
      <Banners error={failure} />
      {failure ? null : <TwoFactorSetup />}
    </>
  );
}
