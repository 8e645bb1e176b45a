// The sign-in form. It posts to the /api/login route handler, which calls
// the gateway and sets the session cookies; no client-side JavaScript needed.
import { cookies } from "next/headers";
import { redirect } from "next/navigation";

import { ACCESS_COOKIE } from "@/lib/session";

export const dynamic = "force-dynamic";

export default async function SignIn({
  searchParams,
}: {
  searchParams: Promise<{ error?: string; notice?: string; email?: string }>;
}) {
  const { error, notice, email } = await searchParams;
  if ((await cookies()).has(ACCESS_COOKIE) && !error) {
    redirect("/profile");
  }
  return (
    <main>
      <h1>Sign in</h1>
      {error ? (
        <p className="error" role="alert" data-testid="error">
          {error}
        </p>
      ) : null}
      {notice ? (
        <p className="notice" role="status">
          {notice}
        </p>
      ) : null}
      <form className="stack" method="post" action="/api/login">
        <label>
          Email
          <input name="email" type="email" autoComplete="username" required defaultValue={email ?? ""} />
        </label>
        <label>
          Password
          <input name="password" type="password" autoComplete="current-password" required minLength={8} />
        </label>
        <button type="submit">Sign in</button>
      </form>
      <p>
        Against the sandbox: <code>demo@example.com</code> / <code>demo-password</code>.
      </p>
    </main>
  );
}
