// Drives the built portal (`next build` + `next start`) in headless Chromium
// against a sandbox gateway, through every flow a customer has, and saves a
// screenshot of each page for CI:
//
//   the `?error=` attack, sign-up, a wrong password, profile edit, password
//   change, two-factor enrolment (codes computed here from the shown secret,
//   RFC 6238), sign-out, sign-in with the two-factor step, sign-in with a
//   recovery code, disabling two-factor, forgot-password -> the mail (read
//   from the sandbox's GET /__sandbox/mails) -> reset page -> sign-in with the
//   new password, the license list (active, suspended, expired), a license
//   page (desktop and phone) -> deactivate with confirmation, the
//   limit-reached error, another user's license, downloads, an expired
//   access token refreshed transparently, and sign-out.
//
// All along it records every URL the browser requested and checks that no
// email, password, code, recovery code, TOTP secret or token was ever in one.
//
//   APP_URL=http://127.0.0.1:3000 SANDBOX_URL=http://127.0.0.1:8089 \
//   SCREENSHOTS=../../target/ci-artifacts/nextjs-screenshots node scripts/e2e.mjs
import assert from "node:assert/strict";
import { createHmac, randomUUID } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const APP_URL = process.env.APP_URL ?? "http://127.0.0.1:3000";
const SANDBOX_URL = process.env.SANDBOX_URL;
const SCREENSHOTS = process.env.SCREENSHOTS ?? "../../target/ci-artifacts/nextjs-screenshots";
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
assert.ok(SANDBOX_URL, "SANDBOX_URL: the sandbox Cryptlex's address, for its /__sandbox/ controls");
mkdirSync(SCREENSHOTS, { recursive: true });

// The sandbox's seed (crates/cryptlex-sandbox/src/seed.rs).
const DEMO_EMAIL = "demo@example.com";
const DEMO_PASSWORD = "demo-password";
const DEMO_USER_ID = "5b7e9c1d-3f2a-4b6c-8d0e-1a2b3c4d5e6f";
const PRODUCT_ID = "8a6f4e2d-1b3c-4d5e-8f70-9a1b2c3d4e5f";
const DEMO_LICENSE_IDS = ["9e0b2f4a-6c5d-4e9f-b031-4d5e6f708192", "a01c3a5b-7d6e-4fa0-8142-5e6f708192a3"];
const OTHER_LICENSE_ID = "b12d4b6c-8e7f-4ab1-9253-6f708192a3b4";
const LIMITED_ACTIVATION_ID = "e5a7c9db-3f4b-4c8d-ae2f-4a6b8c0d2e3f";

const MESSAGES = {
  generic: "Something went wrong. Please try again.",
  invalidCredentials: "That email and password don't match. Check them and try again.",
  invalidCode: "That code didn't work. Check your authenticator app and try again.",
  invalidRecovery: "That recovery code didn't work. Each code works only once; check it and try again.",
  wrongCurrent: "Your current password isn't right. Check it and try again.",
  passwordsDiffer: "The two new passwords don't match.",
  resetInvalid: "This password reset link has expired or has already been used. Please ask for a new one.",
  deactivationLimit:
    "This license has used all of its deactivations, so this machine can't be deactivated here. Please contact support and we'll move the license for you.",
  notFound: "We couldn't find that. It may have been removed, or it belongs to another account.",
};

// --- TOTP (RFC 6238: SHA-1, 30 s, 6 digits), as an authenticator app ----------
function base32Decode(text) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0;
  let value = 0;
  const out = [];
  for (const char of text.replace(/[\s=]/g, "").toUpperCase()) {
    const index = alphabet.indexOf(char);
    assert.ok(index >= 0, "the shown secret is base32");
    value = (value << 5) | index;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}
function totp(secret, unixMs = Date.now()) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(unixMs / 30_000)));
  const mac = createHmac("sha1", base32Decode(secret)).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  return String((mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000).padStart(6, "0");
}
function wrongCode(secret) {
  const valid = new Set([-30_000, 0, 30_000].map((offset) => totp(secret, Date.now() + offset)));
  for (let n = 0; ; n++) {
    const candidate = String((424_242 + n * 7_919) % 1_000_000).padStart(6, "0");
    if (!valid.has(candidate)) return candidate;
  }
}
assert.equal(totp("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", 59_000), "287082", "RFC 6238 test vector");

// --- The browser -------------------------------------------------------------
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
const DESKTOP = { width: 1280, height: 860 };
const PHONE = { width: 390, height: 844 };
const context = await browser.newContext({ viewport: DESKTOP });
const page = await context.newPage();
page.setDefaultTimeout(15_000);

/** Every URL the browser asked for, and every secret that must never be in one. */
const requested = [];
const secrets = new Set();
/** URLs allowed to carry a secret: the reset mail's link itself, by design. */
const allowed = new Set();
context.on("request", (request) => requested.push(request.url()));
const consoleErrors = [];
page.on("pageerror", (error) => consoleErrors.push(String(error)));

let shots = 0;
const step = (text) => console.log(`e2e: ${text}`);
async function shot(name, target = page) {
  shots++;
  const file = `${String(shots).padStart(2, "0")}-${name}.png`;
  await target.screenshot({ path: join(SCREENSHOTS, file), fullPage: true });
}

const path = () => new URL(page.url()).pathname;
const text = async (selector) => ((await page.textContent(selector)) ?? "").trim();

async function expectError(message, scope = page) {
  await scope.locator('[data-testid="error"]', { hasText: message }).first().waitFor();
}
async function expectNotice(message) {
  await page.locator('[data-testid="notice"]', { hasText: message }).first().waitFor();
}

/** Submits a form by its button's test id and waits for the URL to match. */
async function submitTo(testId, pathname) {
  await Promise.all([
    page.waitForURL((url) => (typeof pathname === "string" ? url.pathname === pathname : pathname.test(url.pathname))),
    page.click(`[data-testid="${testId}"]`),
  ]);
}

async function signInForm(email, password) {
  await page.goto(`${APP_URL}/sign-in`);
  await page.fill('input[name="email"]', email);
  await page.fill('input[name="password"]', password);
}

async function signOut() {
  await submitTo("sign-out", "/sign-in");
  await expectNotice("You have been signed out.");
  assert.equal((await context.cookies()).find((c) => c.name === "lgw_access"), undefined, "the session cookie is gone");
}

async function sandbox(method, pathname, body) {
  const response = await fetch(`${SANDBOX_URL}${pathname}`, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  assert.ok(response.ok, `${method} ${pathname}: ${response.status}`);
  return response.status === 204 ? undefined : response.json();
}

try {
  // --- 1. The error banner cannot be written by a link --------------------------
  step("?error=<attacker text> shows the generic message, never the text");
  const attack = "Your account is locked. Call +1-555-0100 <script>alert(1)</script>";
  await page.goto(`${APP_URL}/sign-in?error=${encodeURIComponent(attack)}&notice=${encodeURIComponent(attack)}`);
  assert.equal(await text('[data-testid="error"]'), MESSAGES.generic);
  assert.equal(await page.locator('[data-testid="notice"]').count(), 0, "an unknown notice shows nothing");
  // What a person sees (the framework's inline data does echo the URL, as data).
  const shown = (await page.evaluate(() => document.body.innerText)).toLowerCase();
  for (const fragment of ["555-0100", "account is locked", "alert(1)"]) {
    assert.ok(!shown.includes(fragment), `attacker text "${fragment}" is not shown`);
  }
  await shot("error-attack");

  // --- 2. Sign-up ----------------------------------------------------------------
  step("sign up a new customer");
  const email = `e2e-${randomUUID()}@example.com`;
  let password = `first-${randomUUID().slice(0, 8)}`;
  secrets.add(email).add(encodeURIComponent(email)).add(password);
  await page.goto(`${APP_URL}/sign-up`);
  await page.fill('input[name="firstName"]', "Erin");
  await page.fill('input[name="lastName"]', "Example");
  await page.fill('input[name="email"]', email);
  await page.fill('input[name="password"]', password);
  await shot("sign-up");
  await submitTo("sign-up", "/licenses");
  await expectNotice("Welcome! Your account is ready.");
  await page.locator('[data-testid="no-licenses"]').waitFor();
  await shot("licenses-empty");

  const cookies = await context.cookies();
  const access = cookies.find((c) => c.name === "lgw_access");
  assert.ok(access && access.httpOnly && access.sameSite === "Lax", "the access token is in an httpOnly, SameSite=Lax cookie");
  secrets.add(access.value);
  const refresh = cookies.find((c) => c.name === "lgw_refresh");
  assert.ok(refresh && refresh.httpOnly && refresh.path === "/api/", "the refresh token is sent to /api/ only");
  secrets.add(refresh.value);
  assert.equal(await page.evaluate(() => document.cookie), "", "no cookie is readable by scripts");
  assert.ok(!(await page.content()).includes(access.value), "the access token is not in the page");

  step("sign-up with a taken email is refused kindly");
  await signOut();
  await page.goto(`${APP_URL}/sign-up`);
  await page.fill('input[name="firstName"]', "Erin");
  await page.fill('input[name="email"]', email);
  await page.fill('input[name="password"]', password);
  await page.click('[data-testid="sign-up"]');
  await expectError("An account with this email already exists. Try signing in instead.");
  assert.equal(await page.inputValue('input[name="email"]'), email, "the form keeps what was typed");

  // --- 3. Sign-in, wrong password -------------------------------------------------
  step("a wrong password shows the friendly message and keeps the email, not in the URL");
  await signInForm(email, "wrong-password");
  await page.click('[data-testid="sign-in"]');
  await expectError(MESSAGES.invalidCredentials);
  assert.equal(path(), "/sign-in");
  assert.equal(new URL(page.url()).search, "", "nothing in the query");
  assert.equal(await page.inputValue('input[name="email"]'), email);
  await shot("sign-in-error");
  await page.fill('input[name="password"]', password);
  await submitTo("sign-in", "/licenses");

  // --- 4. Profile edit ----------------------------------------------------------------
  step("edit the profile (UpdateProfile with an update mask)");
  await page.click('nav >> text="Account"');
  await page.waitForURL((url) => url.pathname === "/account");
  assert.equal(await text('[data-testid="email"]'), email);
  await page.fill('input[name="firstName"]', "Erika");
  await page.fill('input[name="lastName"]', "Mustermann");
  await submitTo("save-profile", "/account");
  await expectNotice("Your profile has been saved.");
  assert.equal(await page.inputValue('input[name="firstName"]'), "Erika");
  assert.equal(await page.inputValue('input[name="lastName"]'), "Mustermann");
  assert.match(await text("h1"), /Erika/);

  // --- 5. Password change ------------------------------------------------------------
  step("change the password: a wrong current one is refused, then it works");
  const newPassword = `second-${randomUUID().slice(0, 8)}`;
  secrets.add(newPassword);
  await page.fill('input[name="current"]', "not-my-password");
  await page.fill('[data-testid="password-form"] input[name="password"]', newPassword);
  await page.fill('[data-testid="password-form"] input[name="confirm"]', newPassword);
  await page.click('[data-testid="change-password"]');
  await expectError(MESSAGES.wrongCurrent, page.locator('[data-testid="password-form"]'));
  await page.fill('input[name="current"]', password);
  await page.fill('[data-testid="password-form"] input[name="password"]', newPassword);
  await page.fill('[data-testid="password-form"] input[name="confirm"]', `${newPassword}x`);
  await page.click('[data-testid="change-password"]');
  await expectError(MESSAGES.passwordsDiffer, page.locator('[data-testid="password-form"]'));
  await page.fill('input[name="current"]', password);
  await page.fill('[data-testid="password-form"] input[name="password"]', newPassword);
  await page.fill('[data-testid="password-form"] input[name="confirm"]', newPassword);
  await submitTo("change-password", "/account");
  await expectNotice("Your password has been changed.");
  password = newPassword;
  await shot("account");

  // --- 6. Two-factor enrolment ----------------------------------------------------------
  step("enrol in two-factor: QR code, secret, a wrong code, then the right one, recovery codes");
  assert.equal(await text('[data-testid="two-factor-status"]'), "Off");
  await page.click('[data-testid="set-up-two-factor"]');
  await page.waitForURL((url) => url.pathname === "/account/two-factor");
  await shot("two-factor-start");
  await page.click('[data-testid="start-two-factor"]');
  await page.locator('[data-testid="qr-code"]').waitFor();
  const qr = await page.getAttribute('[data-testid="qr-code"]', "src");
  assert.match(qr ?? "", /^data:image\/svg\+xml;base64,/, "the QR code is an image made on the server");
  assert.ok(Buffer.from(qr.split(",")[1], "base64").toString().includes("<path"), "a real SVG");
  const secret = (await text('[data-testid="totp-secret"]')).replace(/\s/g, "");
  assert.match(secret, /^[A-Z2-7]{16,}$/);
  secrets.add(secret);
  await shot("two-factor-qr");
  await page.fill('[data-testid="enable-two-factor-form"] input[name="code"]', wrongCode(secret));
  await page.click('[data-testid="enable-two-factor"]');
  await expectError(MESSAGES.invalidCode);
  await page.fill('[data-testid="enable-two-factor-form"] input[name="code"]', totp(secret));
  await page.click('[data-testid="enable-two-factor"]');
  await page.locator('[data-testid="recovery-codes"]').waitFor();
  const recoveryCodes = (await page.locator('[data-testid="recovery-codes"] li').allTextContents()).map((c) => c.trim());
  assert.equal(recoveryCodes.length, 10, "ten recovery codes");
  recoveryCodes.forEach((code) => secrets.add(code));
  await shot("two-factor-recovery-codes");
  await submitTo("two-factor-finish", "/account");
  await expectNotice("Two-factor authentication is on.");
  assert.equal(await text('[data-testid="two-factor-status"]'), "On");
  await page.reload();
  assert.equal(await page.locator('[data-testid="recovery-codes"]').count(), 0, "recovery codes are shown once");

  // --- 7. Sign-in with the two-factor step ---------------------------------------------
  step("sign out, sign in: the code step asks only for the code");
  await signOut();
  await signInForm(email, password);
  await submitTo("sign-in", "/sign-in/two-factor");
  assert.equal(new URL(page.url()).search, "", "no credentials in the URL");
  const pending = (await context.cookies()).find((c) => c.name === "lgw_pending_sign_in");
  assert.ok(pending && pending.httpOnly && pending.path === "/sign-in", "the pending sign-in is an httpOnly cookie for /sign-in");
  assert.ok(pending.expires > 0 && pending.expires - Date.now() / 1000 <= 301, "that lives five minutes at most");
  const sealed = `${pending.value} ${Buffer.from(pending.value.replace(/\./g, ""), "base64url").toString("latin1")}`;
  assert.ok(!sealed.includes(password) && !sealed.includes(email), "the cookie is sealed: no email or password in it");
  assert.ok(!(await page.content()).includes(password), "the password is not in the page");
  await shot("sign-in-two-factor");
  await page.fill('input[name="code"]', wrongCode(secret));
  await page.click('[data-testid="verify"]');
  await expectError(MESSAGES.invalidCode);
  await page.fill('input[name="code"]', totp(secret));
  await submitTo("verify", "/licenses");
  assert.equal((await context.cookies()).find((c) => c.name === "lgw_pending_sign_in"), undefined, "the pending sign-in is gone");

  step("sign in with a recovery code; the same code does not work twice");
  await signOut();
  await signInForm(email, password);
  await submitTo("sign-in", "/sign-in/two-factor");
  await page.click('[data-testid="use-recovery-code"]');
  await page.waitForURL((url) => url.searchParams.get("method") === "recovery");
  await shot("sign-in-recovery-code");
  await page.fill('input[name="code"]', recoveryCodes[0]);
  await submitTo("verify", "/licenses");
  await signOut();
  await signInForm(email, password);
  await submitTo("sign-in", "/sign-in/two-factor");
  await page.click('[data-testid="use-recovery-code"]');
  await page.waitForURL((url) => url.searchParams.get("method") === "recovery");
  await page.fill('input[name="code"]', recoveryCodes[0]);
  await page.click('[data-testid="verify"]');
  await expectError(MESSAGES.invalidRecovery);
  await page.fill('input[name="code"]', recoveryCodes[1]);
  await submitTo("verify", "/licenses");

  // --- 8. Disable two-factor --------------------------------------------------------------
  step("turn two-factor off (a wrong code first), then the password alone signs in");
  await page.goto(`${APP_URL}/account`);
  await page.fill('[data-testid="disable-two-factor-form"] input[name="code"]', wrongCode(secret));
  await page.click('[data-testid="disable-two-factor"]');
  await expectError(MESSAGES.invalidCode, page.locator('[data-testid="disable-two-factor-form"]'));
  await page.fill('[data-testid="disable-two-factor-form"] input[name="code"]', totp(secret));
  await submitTo("disable-two-factor", "/account");
  await expectNotice("Two-factor authentication is off.");
  assert.equal(await text('[data-testid="two-factor-status"]'), "Off");
  await signOut();
  await signInForm(email, password);
  await submitTo("sign-in", "/licenses");
  await signOut();

  // --- 9. Forgot password -> the mail -> reset ----------------------------------------------
  step("forgot password: the same answer for anyone; the mailed link resets the password once");
  await page.goto(`${APP_URL}/forgot-password`);
  await shot("forgot-password");
  await page.fill('input[name="email"]', `nobody-${randomUUID()}@example.com`);
  await page.click('[data-testid="send-reset"]');
  const unknownAnswer = await text('[data-testid="reset-sent"]');
  await page.goto(`${APP_URL}/forgot-password`);
  await page.fill('input[name="email"]', email);
  await page.click('[data-testid="send-reset"]');
  assert.equal(await text('[data-testid="reset-sent"]'), unknownAnswer, "no hint whether the account exists");
  assert.equal(path(), "/forgot-password");
  assert.equal(new URL(page.url()).search, "");
  await shot("forgot-password-sent");

  const mails = await sandbox("GET", "/__sandbox/mails");
  const mail = mails.filter((m) => m.to === email).at(-1);
  assert.ok(mail, "the sandbox sent a reset mail to the customer");
  const link = new URL(mail.link);
  assert.equal(link.pathname, "/reset-password");
  assert.ok(link.searchParams.get("token"), "the link carries the token");
  secrets.add(link.searchParams.get("token"));
  // The mail points at the company's site; here that is this app.
  const resetLink = `${APP_URL}${link.pathname}${link.search}`;
  allowed.add(resetLink);
  await page.goto(resetLink);
  assert.equal(path(), "/reset-password/new");
  assert.equal(new URL(page.url()).search, "", "the token left the address bar");
  assert.ok(!(await page.content()).includes(link.searchParams.get("token")), "nor is it in the page");
  await shot("reset-password");
  const resetPassword = `third-${randomUUID().slice(0, 8)}`;
  secrets.add(resetPassword);
  await page.fill('input[name="password"]', resetPassword);
  await page.fill('input[name="confirm"]', `${resetPassword}-typo`);
  await page.click('[data-testid="reset-password"]');
  await expectError(MESSAGES.passwordsDiffer);
  await page.fill('input[name="password"]', resetPassword);
  await page.fill('input[name="confirm"]', resetPassword);
  await submitTo("reset-password", "/sign-in");
  await expectNotice("Your password has been changed. Sign in with your new password.");
  await page.fill('input[name="email"]', email);
  await page.fill('input[name="password"]', password);
  await page.click('[data-testid="sign-in"]');
  await expectError(MESSAGES.invalidCredentials);
  password = resetPassword;
  await page.fill('input[name="password"]', password);
  await submitTo("sign-in", "/licenses");
  await signOut();

  step("the same reset link does not work twice");
  await page.goto(resetLink);
  await page.fill('input[name="password"]', `fourth-${randomUUID().slice(0, 8)}`);
  await page.fill('input[name="confirm"]', await page.inputValue('input[name="password"]'));
  await page.click('[data-testid="reset-password"]');
  await expectError(MESSAGES.resetInvalid);

  // --- 10. The license list: active, suspended, expired ----------------------------------------
  step("the demo user's licenses: active, suspended and expired ones marked as such");
  await sandbox("PATCH", `/__sandbox/licenses/${DEMO_LICENSE_IDS[1]}`, { suspended: true });
  const { token: pat } = await sandbox("POST", "/__sandbox/pats", { scopes: ["license:write", "license:read"] });
  const created = await fetch(`${SANDBOX_URL}/v3/licenses`, {
    method: "POST",
    headers: { authorization: `Bearer ${pat}`, "content-type": "application/json" },
    body: JSON.stringify({ productId: PRODUCT_ID, userId: DEMO_USER_ID, expiresAt: "2025-03-12T00:00:00Z" }),
  });
  assert.equal(created.status, 201, "an expired license for the demo user");
  await signInForm(DEMO_EMAIL, DEMO_PASSWORD);
  await submitTo("sign-in", "/licenses");
  const badges = await page.locator('[data-testid="license"] [data-testid="license-status"]').allTextContents();
  assert.ok(badges.length >= 3, "three licenses or more");
  assert.deepEqual(badges.slice(0, 2), ["Active", "Suspended"]);
  assert.ok(badges.includes("Expired"), `an expired license is marked: ${badges}`);
  assert.ok((await page.textContent("body")).includes("Expired 12 March 2025"), "dates a person reads");
  const keys = await page.locator('[data-testid="license-key"]').allTextContents();
  assert.ok(keys.every((key) => /^[0-9A-F-]{16,}$/.test(key.trim())), "license keys shown in full");
  await shot("licenses");

  // --- 11. One license: details, features, machines -------------------------------------------
  step("a license page: details, features and machines (desktop and phone)");
  await Promise.all([
    page.waitForURL((url) => url.pathname === `/licenses/${DEMO_LICENSE_IDS[0]}`),
    page.locator('[data-testid="license-link"]').first().click(),
  ]);
  assert.equal(await page.locator('[data-testid="feature"]').count(), 2, "two feature entitlements");
  const machines = await page.locator('[data-testid="activation"]').count();
  assert.equal(machines, 2, "two machines on the first demo license");
  const usedBefore = await text('[data-testid="deactivations-used"]');
  assert.match(usedBefore, /^\d+ of \d+ used, \d+ left$|used \(unlimited\)$/);
  const row = await page.locator('[data-testid="activation"]').first().textContent();
  assert.match(row ?? "", /(Windows|macOS|Linux)/, "the operating system");
  await shot("license");

  const phone = await context.newPage();
  await phone.setViewportSize(PHONE);
  await phone.goto(page.url());
  await phone.locator('[data-testid="activation"]').first().waitFor();
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `nothing wider than a phone (${overflow}px too wide)`);
  const keyBox = await phone.locator('[data-testid="license-key"]').first().boundingBox();
  assert.ok(keyBox && keyBox.x >= 0 && keyBox.x + keyBox.width <= PHONE.width, "the license key fits the phone");
  await shot("license-phone", phone);
  await phone.goto(`${APP_URL}/licenses`);
  await shot("licenses-phone", phone);
  await phone.close();

  step("deactivate a machine: the dialog shows what it costs; cancel changes nothing; confirm frees it");
  const first = page.locator('[data-testid="activation"]').first();
  const hostname = await first.getAttribute("data-hostname");
  await first.locator('[data-testid="deactivate"]').click();
  const dialog = first.locator('[data-testid="deactivate-dialog"]');
  await dialog.waitFor({ state: "visible" });
  assert.match(await dialog.locator('[data-testid="deactivations-left"]').textContent(), /left|any number/);
  await shot("deactivate-confirm");
  await dialog.locator('text="Cancel"').click();
  await dialog.waitFor({ state: "hidden" });
  assert.equal(await page.locator('[data-testid="activation"]').count(), machines, "cancel changes nothing");
  await first.locator('[data-testid="deactivate"]').click();
  await Promise.all([
    page.waitForURL((url) => url.searchParams.get("notice") === "deactivated"),
    dialog.locator('[data-testid="confirm-deactivate"]').click(),
  ]);
  await expectNotice("The machine has been deactivated.");
  assert.equal(await page.locator('[data-testid="activation"]').count(), machines - 1, "one machine fewer");
  assert.equal(await page.locator(`[data-testid="activation"][data-hostname="${hostname}"]`).count(), 0);
  assert.notEqual(await text('[data-testid="deactivations-used"]'), usedBefore, "the count moved");
  await shot("deactivated");

  step("the machine on a license out of deactivations: the limit is explained kindly");
  await page.goto(`${APP_URL}/licenses/${DEMO_LICENSE_IDS[1]}`);
  assert.ok((await text('[data-testid="status-explanation"]')).includes("suspended"), "the suspension explained");
  const limited = page.locator('[data-testid="activation"]').first();
  await limited.locator('[data-testid="deactivate"]').click();
  const limitedDialog = limited.locator('[data-testid="deactivate-dialog"]');
  assert.match(await limitedDialog.locator('[data-testid="deactivations-left"]').textContent(), /no deactivations left/);
  await Promise.all([
    page.waitForURL((url) => url.searchParams.get("error") === "deactivation-limit"),
    limitedDialog.locator('[data-testid="confirm-deactivate"]').click(),
  ]);
  await expectError(MESSAGES.deactivationLimit);
  assert.equal(await page.locator('[data-testid="activation"]').count(), 1, "the machine is still there");
  assert.ok(!requested.some((url) => url.includes(LIMITED_ACTIVATION_ID)), "activation ids never go into a URL");
  await shot("deactivation-limit");

  step("another user's license is not found");
  await page.goto(`${APP_URL}/licenses/${OTHER_LICENSE_ID}`);
  await expectError(MESSAGES.notFound);
  await shot("license-not-found");

  // --- 12. Downloads -----------------------------------------------------------------------
  step("downloads: releases newest first with their files; the beta channel alone");
  await page.click('nav >> text="Downloads"');
  await page.waitForURL((url) => url.pathname === "/releases");
  const releases = await page.locator('[data-testid="release"]').count();
  assert.ok(releases >= 3, "the seeded releases");
  const hrefs = await page.locator('[data-testid="download"]').evaluateAll((links) => links.map((a) => a.href));
  assert.ok(hrefs.length >= releases, "each release has a download");
  assert.ok(hrefs.every((href) => /^https?:\/\//.test(href)), "download links are http(s)");
  await shot("releases");
  await page.click('.filters >> text="beta"');
  await page.waitForURL((url) => url.searchParams.get("channel") === "beta");
  const channels = await page.locator('[data-testid="release"] .badge.channel').allTextContents();
  assert.ok(channels.length > 0 && channels.every((c) => c === "beta"), `only beta: ${channels}`);
  await shot("releases-beta");

  // --- 13. An expired access token is refreshed -----------------------------------------------
  step("an expired access token is refreshed with RefreshSession");
  const before = (await context.cookies()).find((c) => c.name === "lgw_access");
  secrets.add(before.value);
  await sandbox("POST", "/__sandbox/expire-access-tokens");
  // Expired behind the gateway's back (no webhook announces it): the gateway
  // answers this token's reads from memory until they are older than
  // cache.max_age (3 s for this run: see run-e2e.sh).
  await new Promise((resolve) => setTimeout(resolve, 3_500));
  await page.goto(`${APP_URL}/licenses`);
  await page.waitForURL((url) => url.pathname === "/licenses" && url.searchParams.get("refreshed") === "1");
  await page.locator('[data-testid="license"]').first().waitFor();
  const renewed = (await context.cookies()).find((c) => c.name === "lgw_access");
  assert.notEqual(renewed?.value, before.value, "a new access token");

  // --- 14. Sign out --------------------------------------------------------------------------
  step("sign out; the portal needs a session again");
  await signOut();
  await shot("signed-out");
  for (const pathname of ["/licenses", "/account", "/releases", `/licenses/${DEMO_LICENSE_IDS[0]}`]) {
    await page.goto(`${APP_URL}${pathname}`);
    assert.equal(path(), "/sign-in", `${pathname} needs a session`);
  }

  // --- No secret in any URL ----------------------------------------------------------------
  step(`no secret in any of the ${requested.length} URLs the browser requested`);
  for (const url of requested) {
    if (allowed.has(url)) continue;
    for (const secret of secrets) {
      assert.ok(!url.includes(secret), `a secret went into a URL: ${url.replace(secret, "<secret>")}`);
    }
  }
  assert.deepEqual(consoleErrors, [], "no script errors in the pages");
  step(`passed; ${shots} screenshots in ${SCREENSHOTS}`);
} catch (error) {
  await page.screenshot({ path: join(SCREENSHOTS, "failure.png"), fullPage: true }).catch(() => {});
  console.error(`e2e: failed on ${page.url()}`);
  throw error;
} finally {
  await browser.close();
}
