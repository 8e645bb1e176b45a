// The customer-portal RPCs (issue 15) against a RUNNING sandbox gateway, once
// per transport (Connect binary, Connect JSON, gRPC-Web; see ../run-tests.sh):
// two-factor sign-in and enrolment, profile, password, password reset
// (reading the mail from the sandbox's `GET /__sandbox/mails`), one license,
// its machines, deactivation and releases.
//
//   GATEWAY_URL=http://127.0.0.1:50051 SANDBOX_URL=http://127.0.0.1:8089 npm test
//
// Accounts whose state a test changes (2FA, names, passwords) are fresh
// sign-ups, so the demo user stays as seeded; only one of the demo user's
// machines is deactivated per transport (the first of its license, as long as
// one is left).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { before, describe, test } from "node:test";

import { Code, Gateway, LicenseStatus, friendlyMessage, licenseStatus, type License } from "../src/gateway";
import { TRANSPORTS, failure, patiently } from "./helpers";
import { totp, wrongCode } from "./totp";

const GATEWAY_URL = process.env.GATEWAY_URL ?? "http://127.0.0.1:50051";
/** The sandbox Cryptlex's own address (its `/__sandbox/` controls); the README's by default. */
const SANDBOX_URL = process.env.SANDBOX_URL ?? "http://127.0.0.1:8089";
const DEMO_EMAIL = "demo@example.com";
const DEMO_PASSWORD = "demo-password";
const OTHER_EMAIL = "other@example.com";
const OTHER_PASSWORD = "other-password";
const PRODUCT_NAME = "Demo Desktop App";
// The sandbox's seed (crates/cryptlex-sandbox/src/seed.rs).
const DEMO_LICENSE_IDS = ["9e0b2f4a-6c5d-4e9f-b031-4d5e6f708192", "a01c3a5b-7d6e-4fa0-8142-5e6f708192a3"];
const OTHER_LICENSE_ID = "b12d4b6c-8e7f-4ab1-9253-6f708192a3b4";
const LIMITED_ACTIVATION_ID = "e5a7c9db-3f4b-4c8d-ae2f-4a6b8c0d2e3f";
const OTHER_ACTIVATION_ID = "f6b8daec-4a5c-4d9e-bf3a-5b7c9d1e3f4a";

for (const transport of TRANSPORTS) {
  const gateway = new Gateway({ baseUrl: GATEWAY_URL, ...transport.options });

  /**
   * One fresh user for the profile, password, reset and releases tests (which
   * leave each other's checks alone), so the file signs up two users, not five:
   * sign-ups count against the per-address sign-in limit.
   */
  let shared: Promise<{ email: string; password: string; accessToken: string }> | undefined;
  function sharedUser(): Promise<{ email: string; password: string; accessToken: string }> {
    shared ??= freshUser("Ada");
    return shared;
}

/** A fresh, signed-in user of its own. */
async function freshUser(firstName = "Portal"): Promise<{ email: string; password: string; accessToken: string }> {
  const email = `ts-portal-${randomUUID()}@example.com`;
  const password = `pw-${randomUUID()}`;
  const { session } = await patiently(() => gateway.signUp({ email, password, firstName, lastName: "Tester" }));
  return { email, password, accessToken: session.accessToken };
}

describe(`two-factor authentication over ${transport.name}`, () => {
  test("enrol, sign in with a code and with a recovery code, then turn it off", async () => {
    const user = await freshUser();

    const { otpauthUrl, secret } = await patiently(() => gateway.startTwoFactorEnrollment(user.accessToken));
    assert.match(otpauthUrl, /^otpauth:\/\/totp\//);
    assert.equal(new URL(otpauthUrl).searchParams.get("secret"), secret, "the secret is the URL's");
    assert.match(secret, /^[A-Z2-7]+=*$/, "base32");

    const wrong = await failure(() => gateway.enableTwoFactor(user.accessToken, wrongCode(secret)));
    assert.equal(wrong.code, Code.InvalidArgument);
    assert.equal(wrong.reason, "INVALID_TWO_FACTOR_CODE");
    assert.equal(wrong.message, friendlyMessage(Code.InvalidArgument, "INVALID_TWO_FACTOR_CODE"));

    const enabled = await patiently(() => gateway.enableTwoFactor(user.accessToken, totp(secret)));
    assert.equal(enabled.twoFactorEnabled, true);
    assert.equal(enabled.email, user.email);

    const recoveryCodes = await patiently(() => gateway.createRecoveryCodes(user.accessToken, totp(secret)));
    assert.equal(recoveryCodes.length, 10);
    assert.equal(new Set(recoveryCodes).size, 10, "all different");

    // The password alone is no longer enough, and says so distinctly.
    const needsCode = await failure(() => gateway.login(user.email, user.password));
    assert.equal(needsCode.code, Code.Unauthenticated);
    assert.equal(needsCode.reason, "TWO_FACTOR_REQUIRED");
    assert.equal(needsCode.needsTwoFactor, true);
    assert.equal(needsCode.needsSignIn, false, "not a session problem");
    assert.equal(needsCode.message, "Enter the six-digit code from your authenticator app to finish signing in.");

    const badCode = await failure(() =>
      gateway.login({ email: user.email, password: user.password, twoFactorCode: wrongCode(secret) }),
    );
    assert.equal(badCode.reason, "INVALID_TWO_FACTOR_CODE");

    const withCode = await patiently(() =>
      gateway.login({ email: user.email, password: user.password, twoFactorCode: totp(secret) }),
    );
    assert.equal((await patiently(() => gateway.getProfile(withCode.accessToken))).twoFactorEnabled, true);

    const recovery = recoveryCodes[0]!;
    const withRecovery = await patiently(() =>
      gateway.login({ email: user.email, password: user.password, twoFactorRecoveryCode: recovery }),
    );
    assert.ok(withRecovery.accessToken.length > 0);
    const reused = await failure(() =>
      gateway.login({ email: user.email, password: user.password, twoFactorRecoveryCode: recovery }),
    );
    assert.equal(reused.reason, "INVALID_TWO_FACTOR_CODE", "a recovery code works once");

    const notOff = await failure(() => gateway.disableTwoFactor(user.accessToken, wrongCode(secret)));
    assert.equal(notOff.reason, "INVALID_TWO_FACTOR_CODE");
    const disabled = await patiently(() => gateway.disableTwoFactor(user.accessToken, totp(secret)));
    assert.equal(disabled.twoFactorEnabled, false);
    assert.ok((await patiently(() => gateway.login(user.email, user.password))).accessToken.length > 0);

    const off = await failure(() => gateway.createRecoveryCodes(user.accessToken, totp(secret)));
    assert.equal(off.code, Code.FailedPrecondition);
    assert.equal(off.reason, "TWO_FACTOR_NOT_ENABLED");
  });
});

describe(`profile and password over ${transport.name}`, () => {
  test("UpdateProfile changes only the fields given (the update mask)", async () => {
    const user = await sharedUser();
    const renamed = await patiently(() => gateway.updateProfile(user.accessToken, { lastName: "Lovelace" }));
    assert.equal(renamed.firstName, "Ada", "not in the mask: unchanged");
    assert.equal(renamed.lastName, "Lovelace");
    const both = await patiently(() => gateway.updateProfile(user.accessToken, { firstName: "Grace", lastName: "Hopper" }));
    assert.equal(both.firstName, "Grace");
    assert.equal(both.lastName, "Hopper");
    const again = await patiently(() => gateway.getProfile(user.accessToken));
    assert.deepEqual([again.firstName, again.lastName], ["Grace", "Hopper"], "GetProfile reads the change");

    const empty = await failure(() => gateway.updateProfile(user.accessToken, { firstName: "" }));
    assert.equal(empty.code, Code.InvalidArgument);
  });

  test("ChangePassword needs the current password; then only the new one signs in", async () => {
    const user = await sharedUser();
    const wrong = await failure(() => gateway.changePassword(user.accessToken, "not-the-password", "a-new-password"));
    assert.equal(wrong.code, Code.InvalidArgument);
    assert.equal(wrong.reason, "WRONG_CURRENT_PASSWORD");
    assert.equal(wrong.message, "Your current password isn't right. Check it and try again.");

    const newPassword = `new-${randomUUID()}`;
    await patiently(() => gateway.changePassword(user.accessToken, user.password, newPassword));
    const old = user.password;
    user.password = newPassword;
    assert.ok((await patiently(() => gateway.login(user.email, newPassword))).accessToken.length > 0);
    const refused = await failure(() => gateway.login(user.email, old));
    assert.equal(refused.reason, "INVALID_CREDENTIALS");
  });
});

describe(`password reset over ${transport.name}`, () => {
  test("RequestPasswordReset answers the same for an unknown address", async () => {
    await patiently(() => gateway.requestPasswordReset(`nobody-${randomUUID()}@example.com`));
  });

  test("the mailed token resets the password once", async () => {
    const user = await sharedUser();
    await patiently(() => gateway.requestPasswordReset(user.email));

    const response = await fetch(`${SANDBOX_URL}/__sandbox/mails`);
    assert.equal(response.status, 200, "the sandbox's mail control");
    const mails = (await response.json()) as { to: string; userId: string; token: string; link: string }[];
    const mail = mails.filter((m) => m.to === user.email).at(-1);
    assert.ok(mail, "a reset mail went to the user");
    const link = new URL(mail.link);
    assert.equal(link.pathname, "/reset-password");
    assert.equal(link.searchParams.get("token"), mail.token);
    assert.equal(link.searchParams.get("userId"), mail.userId);

    const bogus = await failure(() =>
      gateway.resetPassword({ userId: mail.userId, token: `bogus-${randomUUID()}`, newPassword: "whatever-123" }),
    );
    assert.equal(bogus.code, Code.FailedPrecondition);
    assert.equal(bogus.reason, "RESET_TOKEN_INVALID");
    assert.equal(
      bogus.message,
      "This password reset link has expired or has already been used. Please ask for a new one.",
    );

    const newPassword = `reset-${randomUUID()}`;
    await patiently(() => gateway.resetPassword({ userId: mail.userId, token: mail.token, newPassword }));
    assert.ok((await patiently(() => gateway.login(user.email, newPassword))).accessToken.length > 0);

    const used = await failure(() => gateway.resetPassword({ userId: mail.userId, token: mail.token, newPassword: "again-123456" }));
    assert.equal(used.reason, "RESET_TOKEN_INVALID", "a token works once");
  });
});

describe(`licenses, machines and releases over ${transport.name}`, () => {
  /** One demo session for these tests: fewer sign-ins against the per-address limit. */
  let demo = "";
  before(async () => {
    demo = (await patiently(() => gateway.login(DEMO_EMAIL, DEMO_PASSWORD))).accessToken;
  });

  test("GetLicense returns the license with its counts, status and features", async () => {
    const accessToken = demo;
    const { license, featureEntitlements } = await patiently(() => gateway.getLicense(accessToken, DEMO_LICENSE_IDS[0]!));
    assert.equal(license.id, DEMO_LICENSE_IDS[0]);
    assert.equal(license.productName, PRODUCT_NAME);
    assert.ok(license.key.length > 0);
    assert.equal(license.status, LicenseStatus.ACTIVE);
    assert.equal(licenseStatus(license), LicenseStatus.ACTIVE);
    assert.ok(license.allowedActivations > 0);
    assert.ok(license.totalDeactivations >= 0);
    assert.ok(featureEntitlements.length >= 2, "the seeded features");
    assert.ok(featureEntitlements.every((f) => f.featureId.length > 0 && f.featureName.length > 0));
  });

  test("another user's license, machines and machine are NOT_FOUND", async () => {
    const accessToken = demo;
    const license = await failure(() => gateway.getLicense(accessToken, OTHER_LICENSE_ID));
    assert.equal(license.code, Code.NotFound);
    assert.equal(license.reason, "NOT_FOUND");
    assert.equal(license.message, "We couldn't find that.");
    const machines = await failure(() => gateway.listActivationsPage(accessToken, OTHER_LICENSE_ID));
    assert.equal(machines.code, Code.NotFound);
    const machine = await failure(() => gateway.deactivateMachine(accessToken, OTHER_ACTIVATION_ID));
    assert.equal(machine.code, Code.NotFound);

    // And the other user still has it.
    const other = (await patiently(() => gateway.login(OTHER_EMAIL, OTHER_PASSWORD))).accessToken;
    const theirs = await patiently(() => gateway.listAllActivations(other, OTHER_LICENSE_ID));
    assert.ok(theirs.some((a) => a.id === OTHER_ACTIVATION_ID), "the other user's machine was not deactivated");
  });

  test("ListActivations pages through a license's machines", async () => {
    const accessToken = demo;
    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await patiently(() =>
        gateway.listActivationsPage(accessToken, DEMO_LICENSE_IDS[1]!, { pageSize: 1, pageToken }),
      );
      assert.ok(page.activations.length <= 1);
      for (const activation of page.activations) {
        assert.equal(activation.licenseId, DEMO_LICENSE_IDS[1]);
        assert.ok(activation.hostname.length > 0);
        assert.ok(activation.os.length > 0);
        seen.push(activation.id);
      }
      pageToken = page.nextPageToken;
      assert.ok(++pages <= 10, "paging terminates");
    } while (pageToken !== "");
    assert.ok(seen.includes(LIMITED_ACTIVATION_ID));
    assert.deepEqual((await patiently(() => gateway.listAllActivations(accessToken, DEMO_LICENSE_IDS[1]!))).map((a) => a.id), seen);
  });

  test("DeactivateMachine frees an activation; on a license out of deactivations it is refused", async (t) => {
    const accessToken = demo;
    const limited = await failure(() => gateway.deactivateMachine(accessToken, LIMITED_ACTIVATION_ID));
    assert.equal(limited.code, Code.FailedPrecondition);
    assert.equal(limited.reason, "DEACTIVATION_LIMIT_REACHED");
    assert.match(limited.message, /used all of its deactivations/);
    const stillThere = await patiently(() => gateway.listAllActivations(accessToken, DEMO_LICENSE_IDS[1]!));
    assert.ok(stillThere.some((a) => a.id === LIMITED_ACTIVATION_ID), "nothing changed");

    const before = (await patiently(() => gateway.getLicense(accessToken, DEMO_LICENSE_IDS[0]!))).license;
    const machines = await patiently(() => gateway.listAllActivations(accessToken, DEMO_LICENSE_IDS[0]!));
    const target = machines[0];
    if (target === undefined) {
      // An earlier run against the same sandbox used them up.
      t.skip("no machine left to deactivate on the demo license");
      return;
    }
    const { licenseId } = await patiently(() => gateway.deactivateMachine(accessToken, target.id));
    assert.equal(licenseId, DEMO_LICENSE_IDS[0]);
    const after: License = (await patiently(() => gateway.getLicense(accessToken, licenseId))).license;
    assert.equal(after.totalActivations, before.totalActivations - 1);
    assert.equal(after.totalDeactivations, before.totalDeactivations + 1);
    const left = await patiently(() => gateway.listAllActivations(accessToken, licenseId));
    assert.ok(!left.some((a) => a.id === target.id), "the machine is gone from the list");

    const again = await failure(() => gateway.deactivateMachine(accessToken, target.id));
    assert.equal(again.code, Code.NotFound, "a machine deactivates once");
  });

  test("ListReleases lists downloads newest first, by channel and product", async () => {
    const accessToken = demo;
    const releases = await patiently(() => gateway.listAllReleases(accessToken, { pageSize: 2 }));
    assert.ok(releases.length >= 3, "the seeded releases");
    const published = releases.map((r) => r.publishedAt?.seconds ?? 0n);
    assert.deepEqual([...published].sort((a, b) => (a > b ? -1 : a < b ? 1 : 0)), published, "newest first");
    for (const release of releases) {
      assert.equal(release.productName, PRODUCT_NAME);
      assert.ok(release.version.length > 0);
      assert.ok(release.files.length > 0, "files to download");
      for (const file of release.files) assert.match(file.url, /^https?:\/\//);
    }
    const beta = await patiently(() => gateway.listAllReleases(accessToken, { channel: "beta" }));
    assert.ok(beta.length > 0 && beta.every((r) => r.channel === "beta"));
    const stable = await patiently(() => gateway.listAllReleases(accessToken, { channel: "stable" }));
    assert.equal(beta.length + stable.length, releases.length);
    const none = await patiently(() => gateway.listAllReleases(accessToken, { productName: "No Such Product" }));
    assert.deepEqual(none, []);

    const stranger = await sharedUser();
    assert.deepEqual(await patiently(() => gateway.listAllReleases(stranger.accessToken)), [], "no license, no downloads");
  });
});
}

describe("the wrapper's license status", () => {
  test("derives the status when an older gateway sends none", () => {
    const base = { status: LicenseStatus.UNSPECIFIED, revoked: false, suspended: false, perpetual: false } as License;
    assert.equal(licenseStatus({ ...base, revoked: true, suspended: true }), LicenseStatus.REVOKED);
    assert.equal(licenseStatus({ ...base, suspended: true }), LicenseStatus.SUSPENDED);
    const past = { seconds: 1_000n, nanos: 0 } as License["expiresAt"];
    assert.equal(licenseStatus({ ...base, expiresAt: past }), LicenseStatus.EXPIRED);
    assert.equal(licenseStatus({ ...base, perpetual: true, expiresAt: past }), LicenseStatus.ACTIVE);
    assert.equal(licenseStatus({ ...base }), LicenseStatus.ACTIVE);
    assert.equal(licenseStatus({ ...base, status: LicenseStatus.SUSPENDED }), LicenseStatus.SUSPENDED, "the gateway's word wins");
  });

  test("every new reason has its own message", () => {
    const generic = friendlyMessage(Code.FailedPrecondition, undefined);
    for (const reason of [
      "TWO_FACTOR_REQUIRED",
      "INVALID_TWO_FACTOR_CODE",
      "TWO_FACTOR_NOT_ENABLED",
      "WRONG_CURRENT_PASSWORD",
      "RESET_TOKEN_INVALID",
      "DEACTIVATION_LIMIT_REACHED",
    ]) {
      assert.notEqual(friendlyMessage(Code.FailedPrecondition, reason), generic, reason);
    }
  });
});
