// The account: profile (UpdateProfile), password (ChangePassword) and
// two-factor authentication (set up, new recovery codes, turn off).
import type { Metadata } from "next";
import Link from "next/link";
import type { Profile } from "@licensing-gateway/client";

import { Banners } from "@/components/banners";
import { formatDate, formatDateTime } from "@/lib/format";
import { gateway, read } from "@/lib/gateway";
import type { ErrorCode } from "@/lib/messages";
import { pageFailure, pageSession } from "@/lib/session";
import { DisableTwoFactorForm, PasswordForm, ProfileForm, RecoveryCodesForm } from "./forms";

export const dynamic = "force-dynamic";
export const metadata: Metadata = { title: "Account" };

const PATH = "/account";

export default async function AccountPage({
  searchParams,
}: {
  searchParams: Promise<{ refreshed?: string; error?: string | string[]; notice?: string | string[] }>;
}) {
  const { refreshed, error, notice } = await searchParams;
  const accessToken = await pageSession(PATH, refreshed === "1");
  let profile: Profile | undefined;
  let failure: ErrorCode | undefined;
  try {
    profile = await read(() => gateway().getProfile(accessToken));
  } catch (caught) {
    failure = pageFailure(caught, PATH, refreshed === "1");
  }
  if (profile === undefined) return <Banners error={failure ?? "generic"} />;

  return (
    <>
      <div className="page-title">
        <h1>Hello, {profile.firstName || profile.name}</h1>
        <p>
          Member since {formatDate(profile.createdAt)}
          {profile.lastLoginAt ? ` · last sign-in ${formatDateTime(profile.lastLoginAt)}` : ""}
        </p>
      </div>
      <Banners error={error} notice={notice} />

      <div className="grid two">
        <section className="card" aria-labelledby="profile">
          <h2 id="profile">Profile</h2>
          <ProfileForm firstName={profile.firstName} lastName={profile.lastName} />
          <dl className="facts" data-testid="profile">
            <dt>Email</dt>
            <dd data-testid="email">{profile.email}</dd>
            {profile.company ? (
              <>
                <dt>Company</dt>
                <dd>{profile.company}</dd>
              </>
            ) : null}
          </dl>
          <p className="muted small">To change your email address, please contact support.</p>
        </section>

        <section className="card" aria-labelledby="password">
          <h2 id="password">Password</h2>
          <PasswordForm />
        </section>
      </div>

      <section className="card" aria-labelledby="two-factor">
        <div className="card-header">
          <h2 id="two-factor">Two-factor authentication</h2>
          <span className={`badge ${profile.twoFactorEnabled ? "active" : "expired"}`} data-testid="two-factor-status">
            {profile.twoFactorEnabled ? "On" : "Off"}
          </span>
        </div>
        {profile.twoFactorEnabled ? (
          <div className="grid two">
            <div>
              <h3>New recovery codes</h3>
              <p className="muted small">
                Makes ten new recovery codes; the old ones stop working. Enter a current code from your app.
              </p>
              <RecoveryCodesForm />
            </div>
            <div>
              <h3>Turn off</h3>
              <p className="muted small">Signing in will need only your password. Enter a current code from your app.</p>
              <DisableTwoFactorForm />
            </div>
          </div>
        ) : (
          <>
            <p>
              Protect your account with a code from an authenticator app (Google Authenticator, 1Password, Authy…) each time
              you sign in.
            </p>
            <Link className="button" href="/account/two-factor" data-testid="set-up-two-factor">
              Set up two-factor authentication
            </Link>
          </>
        )}
      </section>
    </>
  );
}
