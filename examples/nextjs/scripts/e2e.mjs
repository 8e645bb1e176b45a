// Drives the built example in headless Chromium: a wrong password shows a
// friendly error; sign-in -> profile -> licenses; an expired access token is
// refreshed transparently; sign-out. Saves screenshots for CI.
//
//   APP_URL=http://127.0.0.1:3000 SANDBOX_URL=http://127.0.0.1:8089 \
//   ARTIFACTS=../../target/ci-artifacts node scripts/e2e.mjs
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const APP_URL = process.env.APP_URL ?? "http://127.0.0.1:3000";
const SANDBOX_URL = process.env.SANDBOX_URL;
const ARTIFACTS = process.env.ARTIFACTS ?? "../../target/ci-artifacts";
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
mkdirSync(ARTIFACTS, { recursive: true });

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
});
const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
page.setDefaultTimeout(15_000);
const step = (text) => console.log(`e2e: ${text}`);

try {
  step("a wrong password shows the friendly INVALID_CREDENTIALS message");
  await page.goto(`${APP_URL}/`);
  await page.fill('input[name="email"]', "demo@example.com");
  await page.fill('input[name="password"]', "wrong-password");
  await Promise.all([page.waitForURL((url) => url.searchParams.has("error")), page.click('button[type="submit"]')]);
  assert.equal(
    (await page.textContent('[data-testid="error"]'))?.trim(),
    "That email and password don't match. Check them and try again.",
  );

  step("sign in -> profile -> licenses");
  await page.fill('input[name="password"]', "demo-password");
  await Promise.all([page.waitForURL((url) => url.pathname === "/profile"), page.click('button[type="submit"]')]);
  assert.equal((await page.textContent('[data-testid="email"]'))?.trim(), "demo@example.com");
  assert.equal(await page.locator('[data-testid="license"]').count(), 2, "both demo licenses listed");
  const cookies = await page.context().cookies();
  const access = cookies.find((c) => c.name === "lgw_access");
  assert.ok(access, "access cookie set");
  assert.equal(access.httpOnly, true, "httpOnly");
  assert.equal(access.sameSite, "Lax", "SameSite=Lax");
  const refresh = cookies.find((c) => c.name === "lgw_refresh");
  assert.ok(refresh && refresh.httpOnly && refresh.path === "/api/", "refresh cookie only for /api/");
  await page.screenshot({ path: join(ARTIFACTS, "nextjs-profile.png"), fullPage: true });

  if (SANDBOX_URL) {
    step("an expired access token is refreshed with RefreshSession");
    const expired = await fetch(`${SANDBOX_URL}/__sandbox/expire-access-tokens`, { method: "POST" });
    assert.equal(expired.status, 204);
    // Expired behind the gateway's back (no webhook announces it): the gateway
    // answers this token's reads from memory until they are older than
    // cache.max_age (3 s for this run: see run-e2e.sh).
    await new Promise((resolve) => setTimeout(resolve, 3_500));
    await page.goto(`${APP_URL}/profile`);
    await page.waitForURL((url) => url.pathname === "/profile" && url.searchParams.get("refreshed") === "1");
    assert.equal((await page.textContent('[data-testid="email"]'))?.trim(), "demo@example.com");
    const renewed = (await page.context().cookies()).find((c) => c.name === "lgw_access");
    assert.notEqual(renewed?.value, access.value, "a new access token");
  }

  step("sign out");
  await Promise.all([page.waitForURL((url) => url.pathname === "/"), page.click('text="Sign out"')]);
  assert.ok((await page.textContent("body"))?.includes("You have been signed out."));
  assert.equal((await page.context().cookies()).find((c) => c.name === "lgw_access"), undefined);
  await page.goto(`${APP_URL}/profile`);
  assert.equal(new URL(page.url()).pathname, "/", "profile needs a session");
  step("passed");
} catch (error) {
  await page.screenshot({ path: join(ARTIFACTS, "nextjs-failure.png"), fullPage: true }).catch(() => {});
  throw error;
} finally {
  await browser.close();
}
