// The signed-in user's profile and licenses, rendered on the server from two
// gateway calls (GetProfile, ListMyLicenses paged to the end).
//
// Refresh on expiry: when the access token's stated expiry is near, or when
// the gateway answers TOKEN_INVALID, we go through /api/refresh (a route
// handler may set cookies; a page may not) and come back once.
import { cookies } from "next/headers";
import { redirect } from "next/navigation";
import { optionalDate, toGatewayError, type License, type Profile } from "@licensing-gateway/client";

import { gateway } from "@/lib/gateway";
import { ACCESS_COOKIE, EXPIRES_COOKIE, expiresSoon } from "@/lib/session";

export const dynamic = "force-dynamic";

const REFRESH = "/api/refresh?next=/profile";

export default async function ProfilePage({
  searchParams,
}: {
  searchParams: Promise<{ refreshed?: string }>;
}) {
  const { refreshed } = await searchParams;
  const jar = await cookies();
  const accessToken = jar.get(ACCESS_COOKIE)?.value;
  if (!accessToken) redirect("/");
  if (!refreshed && expiresSoon(jar.get(EXPIRES_COOKIE)?.value)) redirect(REFRESH);

  let profile: Profile;
  let licenses: License[];
  try {
    const client = gateway();
    [profile, licenses] = await Promise.all([
      client.getProfile(accessToken),
      client.listAllLicenses(accessToken, { pageSize: 25 }),
    ]);
  } catch (error) {
    const failure = toGatewayError(error);
    if (failure.reason === "TOKEN_INVALID" && !refreshed) redirect(REFRESH);
    if (failure.needsSignIn) redirect(`/?error=${encodeURIComponent(failure.message)}`);
    return (
      <main>
        <h1>Your account</h1>
        <p className="error" role="alert" data-testid="error">
          {failure.message}
        </p>
        <LogoutButton />
      </main>
    );
  }

  return (
    <main>
      <h1>Hello, {profile.firstName || profile.name}</h1>
      <section aria-labelledby="profile">
        <h2 id="profile">Profile</h2>
        <dl data-testid="profile">
          <dt>Name</dt>
          <dd>{profile.name}</dd>
          <dt>Email</dt>
          <dd data-testid="email">{profile.email}</dd>
          {profile.company ? (
            <>
              <dt>Company</dt>
              <dd>{profile.company}</dd>
            </>
          ) : null}
          <dt>Member since</dt>
          <dd>{formatDate(optionalDate(profile.createdAt))}</dd>
          <dt>Two-factor</dt>
          <dd>{profile.twoFactorEnabled ? "on" : "off"}</dd>
        </dl>
      </section>
      <section aria-labelledby="licenses">
        <h2 id="licenses">Licenses ({licenses.length})</h2>
        {licenses.length === 0 ? (
          <p>You have no licenses yet.</p>
        ) : (
          <table data-testid="licenses">
            <thead>
              <tr>
                <th>Product</th>
                <th>Key</th>
                <th>Type</th>
                <th>Status</th>
                <th>Expires</th>
                <th>Activations</th>
              </tr>
            </thead>
            <tbody>
              {licenses.map((license) => (
                <tr key={license.id} data-testid="license">
                  <td>{license.productName}</td>
                  <td>
                    <code>{license.key}</code>
                  </td>
                  <td>{license.type}</td>
                  <td>{status(license)}</td>
                  <td>{license.perpetual ? "never" : formatDate(optionalDate(license.expiresAt))}</td>
                  <td>
                    {license.totalActivations} / {license.allowedActivations > 0 ? license.allowedActivations : "∞"}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
      <LogoutButton />
    </main>
  );
}

function LogoutButton() {
  return (
    <form method="post" action="/api/logout" style={{ marginTop: "1.5rem" }}>
      <button type="submit">Sign out</button>
    </form>
  );
}

function status(license: License): string {
  if (license.revoked) return "revoked";
  if (license.suspended) return "suspended";
  return "active";
}

function formatDate(date: Date | undefined): string {
  return date === undefined ? "—" : date.toISOString().slice(0, 10);
}
