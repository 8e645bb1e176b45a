// The error contract across transports, against a RUNNING sandbox gateway
// (see ../run-tests.sh): every failure the other test files provoke, made
// once over each of Connect binary, Connect JSON and gRPC-Web, must decode to
// the same GatewayError: code, ErrorInfo reason and metadata, the gateway's
// message, BadRequest field violations and RetryInfo delay.
//
//   GATEWAY_URL=http://127.0.0.1:50051 SANDBOX_URL=http://127.0.0.1:8089 npm test
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { before, describe, test } from "node:test";

import { Code, Gateway, type GatewayError } from "../src/gateway";
import { ALL_TRANSPORTS, failure, patiently } from "./helpers";
import { totp, wrongCode } from "./totp";

const GATEWAY_URL = process.env.GATEWAY_URL ?? "http://127.0.0.1:50051";
const SANDBOX_URL = process.env.SANDBOX_URL ?? "http://127.0.0.1:8089";
const DEMO_EMAIL = "demo@example.com";
const DEMO_PASSWORD = "demo-password";
const OTHER_LICENSE_ID = "b12d4b6c-8e7f-4ab1-9253-6f708192a3b4";
const OTHER_ACTIVATION_ID = "f6b8daec-4a5c-4d9e-bf3a-5b7c9d1e3f4a";
const LIMITED_ACTIVATION_ID = "e5a7c9db-3f4b-4c8d-ae2f-4a6b8c0d2e3f";

/**
 * Always the same three, whatever GATEWAY_TRANSPORTS says: the point is
 * comparing them. gRPC-Web JSON is left out here because a fourth round of
 * sign-ins would exceed a default sandbox's per-address sign-in allowance
 * (this file also runs against the README's plain sandbox); the gateway's
 * own tests hold it to the same error contract (tests/api/connect.rs).
 */
const gateways = ALL_TRANSPORTS.filter((transport) => transport.id !== "grpc-web-json").map((transport) => ({
  transport,
  gateway: new Gateway({ baseUrl: GATEWAY_URL, ...transport.options }),
}));
const setup = gateways[0]!.gateway;

/** What a caller can read from a GatewayError (not the cause). */
function decoded(error: GatewayError) {
  return {
    code: error.codeName,
    reason: error.reason,
    message: error.message,
    serverMessage: error.serverMessage,
    fieldViolations: error.fieldViolations,
    retryAfterMs: error.retryAfterMs,
    metadata: error.metadata,
  };
}

/** Makes the same failing call over every transport; returns the decoded errors, checked equal. */
async function sameOverEveryTransport(
  call: (gateway: Gateway) => Promise<unknown>,
  expected: { code: Code; reason: string | undefined },
): Promise<ReturnType<typeof decoded>> {
  const seen: { name: string; error: ReturnType<typeof decoded> }[] = [];
  for (const { transport, gateway } of gateways) {
    const error = await failure(() => call(gateway));
    seen.push({ name: transport.name, error: decoded(error) });
  }
  const [first, ...rest] = seen;
  assert.equal(first!.error.code, Code[expected.code], `${first!.name}: ${JSON.stringify(first!.error)}`);
  assert.equal(first!.error.reason, expected.reason, first!.name);
  for (const other of rest) {
    assert.deepEqual(other.error, first!.error, `${other.name} says what ${first!.name} says`);
  }
  return first!.error;
}

async function freshUser(): Promise<{ email: string; password: string; accessToken: string }> {
  const email = `ts-contract-${randomUUID()}@example.com`;
  const password = `pw-${randomUUID()}`;
  const { session } = await patiently(() => setup.signUp({ email, password, firstName: "Contract" }));
  return { email, password, accessToken: session.accessToken };
}

describe("the same error over Connect binary, Connect JSON and gRPC-Web", () => {
  let demo = "";
  before(async () => {
    demo = (await patiently(() => setup.login(DEMO_EMAIL, DEMO_PASSWORD))).accessToken;
  });

  test("Unauthenticated / INVALID_CREDENTIALS (a wrong password)", async () => {
    await sameOverEveryTransport((g) => g.login(DEMO_EMAIL, "wrong-password"), {
      code: Code.Unauthenticated,
      reason: "INVALID_CREDENTIALS",
    });
  });

  test("Unauthenticated / TOKEN_MISSING (GetProfile without a token, a GET over Connect)", async () => {
    await sameOverEveryTransport((g) => g.getProfile(""), { code: Code.Unauthenticated, reason: "TOKEN_MISSING" });
  });

  test("Unauthenticated / TOKEN_INVALID (a bogus refresh token; a revoked access token)", async () => {
    await sameOverEveryTransport((g) => g.refresh(`not-a-refresh-token-${randomUUID()}`), {
      code: Code.Unauthenticated,
      reason: "TOKEN_INVALID",
    });
    const session = await patiently(() => setup.login(DEMO_EMAIL, DEMO_PASSWORD));
    await setup.logout(session.accessToken);
    await sameOverEveryTransport((g) => g.getProfile(session.accessToken), {
      code: Code.Unauthenticated,
      reason: "TOKEN_INVALID",
    });
  });

  test("InvalidArgument / INVALID_ARGUMENT with the same field violations", async () => {
    const error = await sameOverEveryTransport((g) => g.login("", "short"), {
      code: Code.InvalidArgument,
      reason: "INVALID_ARGUMENT",
    });
    assert.ok(error.fieldViolations.some((v) => v.field === "email"), JSON.stringify(error.fieldViolations));
  });

  test("AlreadyExists / EMAIL_TAKEN", async () => {
    await sameOverEveryTransport((g) => g.signUp({ email: DEMO_EMAIL, password: "a-long-password", firstName: "Again" }), {
      code: Code.AlreadyExists,
      reason: "EMAIL_TAKEN",
    });
  });

  test("NotFound / NOT_FOUND (another user's license, machines, machine)", async () => {
    await sameOverEveryTransport((g) => g.getLicense(demo, OTHER_LICENSE_ID), { code: Code.NotFound, reason: "NOT_FOUND" });
    await sameOverEveryTransport((g) => g.listActivationsPage(demo, OTHER_LICENSE_ID), {
      code: Code.NotFound,
      reason: "NOT_FOUND",
    });
    await sameOverEveryTransport((g) => g.deactivateMachine(demo, OTHER_ACTIVATION_ID), {
      code: Code.NotFound,
      reason: "NOT_FOUND",
    });
  });

  test("FailedPrecondition / DEACTIVATION_LIMIT_REACHED", async () => {
    await sameOverEveryTransport((g) => g.deactivateMachine(demo, LIMITED_ACTIVATION_ID), {
      code: Code.FailedPrecondition,
      reason: "DEACTIVATION_LIMIT_REACHED",
    });
  });

  test("FailedPrecondition / RESET_TOKEN_INVALID", async () => {
    await sameOverEveryTransport(
      (g) => g.resetPassword({ email: DEMO_EMAIL, token: `bogus-${randomUUID()}`, newPassword: "whatever-123" }),
      { code: Code.FailedPrecondition, reason: "RESET_TOKEN_INVALID" },
    );
  });

  test("InvalidArgument / WRONG_CURRENT_PASSWORD", async () => {
    const user = await freshUser();
    await sameOverEveryTransport((g) => g.changePassword(user.accessToken, "not-the-password", "a-new-password"), {
      code: Code.InvalidArgument,
      reason: "WRONG_CURRENT_PASSWORD",
    });
  });

  test("two-factor: INVALID_TWO_FACTOR_CODE, TWO_FACTOR_REQUIRED, TWO_FACTOR_NOT_ENABLED", async () => {
    const plain = await freshUser();
    await sameOverEveryTransport((g) => g.createRecoveryCodes(plain.accessToken, "123456"), {
      code: Code.FailedPrecondition,
      reason: "TWO_FACTOR_NOT_ENABLED",
    });

    const user = await freshUser();
    const { secret } = await patiently(() => setup.startTwoFactorEnrollment(user.accessToken));
    await sameOverEveryTransport((g) => g.enableTwoFactor(user.accessToken, wrongCode(secret)), {
      code: Code.InvalidArgument,
      reason: "INVALID_TWO_FACTOR_CODE",
    });
    await patiently(() => setup.enableTwoFactor(user.accessToken, totp(secret)));
    await sameOverEveryTransport((g) => g.login(user.email, user.password), {
      code: Code.Unauthenticated,
      reason: "TWO_FACTOR_REQUIRED",
    });
    await sameOverEveryTransport(
      (g) => g.login({ email: user.email, password: user.password, twoFactorCode: wrongCode(secret) }),
      { code: Code.InvalidArgument, reason: "INVALID_TWO_FACTOR_CODE" },
    );
  });

  test("a sign-in Cryptlex refuses with 429 carries the same RetryInfo delay", async () => {
    // Cryptlex answers the sign-in with 429 and Retry-After (a sandbox fault
    // rule); the gateway passes the wait on as RetryInfo. No `failure()`
    // here: it would wait the refusal out.
    const seen: { name: string; error: ReturnType<typeof decoded> }[] = [];
    for (const { transport, gateway } of gateways) {
      const rule = await fetch(`${SANDBOX_URL}/__sandbox/faults`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          method: "POST",
          pathPrefix: "/v3/accounts/login",
          times: 100,
          action: { kind: "respond", status: 429, contentType: "application/json", body: '{"message":"slow down"}', headers: { "retry-after": "2" } },
        }),
      });
      assert.equal(rule.status, 201, "the sandbox took the fault rule");
      try {
        await gateway.login(DEMO_EMAIL, DEMO_PASSWORD);
        assert.fail(`${transport.name}: the sign-in should have been refused`);
      } catch (error) {
        seen.push({ name: transport.name, error: decoded(error as GatewayError) });
      } finally {
        await fetch(`${SANDBOX_URL}/__sandbox/faults`, { method: "DELETE" });
      }
      // Let the gateway's own pause after a 429 pass before the next transport.
      await new Promise((resolve) => setTimeout(resolve, (seen.at(-1)?.error.retryAfterMs ?? 0) + 200));
    }
    const [first, ...rest] = seen;
    assert.ok(first!.error.retryAfterMs !== undefined && first!.error.retryAfterMs > 0, JSON.stringify(first!.error));
    for (const other of rest) {
      // The wait shrinks as the gateway's pause runs out; the rest is the same.
      assert.deepEqual({ ...other.error, retryAfterMs: 0, message: "" }, { ...first!.error, retryAfterMs: 0, message: "" }, other.name);
      assert.ok(other.error.retryAfterMs !== undefined && other.error.retryAfterMs > 0, other.name);
    }
  });

  test("an unreachable gateway is the same reasonless failure", async () => {
    const seen: Code[] = [];
    for (const { transport } of gateways) {
      const nowhere = new Gateway({ baseUrl: "http://127.0.0.1:9", timeoutMs: 2_000, ...transport.options });
      const error = await failure(() => nowhere.login(DEMO_EMAIL, DEMO_PASSWORD));
      assert.equal(error.reason, undefined, transport.name);
      seen.push(error.code);
    }
    assert.ok(seen.every((code) => code === seen[0]), seen.map((c) => Code[c]).join(", "));
  });
});
