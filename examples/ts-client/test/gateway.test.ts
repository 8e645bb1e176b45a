// Runs against a RUNNING sandbox gateway (see ../run-tests.sh) on Node's
// fetch (HTTP/1.1 only), once per transport: Connect binary (the client's
// default), Connect JSON and gRPC-Web binary. GATEWAY_TRANSPORTS picks some.
//
//   GATEWAY_URL=http://127.0.0.1:50051 npm test

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { before, describe, test } from "node:test";

import { Code, Gateway, friendlyMessage, optionalDate } from "../src/gateway";
import { TRANSPORTS, failure, patiently } from "./helpers";

const GATEWAY_URL = process.env.GATEWAY_URL ?? "http://127.0.0.1:50051";
const DEMO_EMAIL = "demo@example.com";
const DEMO_PASSWORD = "demo-password";
const DEMO_LICENSE_IDS = [
  "9e0b2f4a-6c5d-4e9f-b031-4d5e6f708192",
  "a01c3a5b-7d6e-4fa0-8142-5e6f708192a3",
];

for (const transport of TRANSPORTS) {
  /** Every exchange the transport made, to prove what went over the wire. */
  const exchanges: {
    url: string;
    method: string;
    requestType: string | null;
    responseType: string | null;
    cacheControl: string | null;
  }[] = [];
  const recordingFetch: typeof fetch = async (input, init) => {
    const response = await fetch(input, init);
    exchanges.push({
      url: String(input instanceof Request ? input.url : input),
      method: init?.method ?? (input instanceof Request ? input.method : "GET"),
      requestType: new Headers(init?.headers).get("content-type"),
      responseType: response.headers.get("content-type"),
      cacheControl: response.headers.get("cache-control"),
    });
    return response;
  };

  const gateway = new Gateway({ baseUrl: GATEWAY_URL, fetch: recordingFetch, ...transport.options });

  describe(`licensing-gateway over ${transport.name} (fetch, HTTP/1.1)`, () => {
    let accessToken = "";
    let refreshToken = "";

    before(async () => {
      const session = await patiently(() => gateway.login(DEMO_EMAIL, DEMO_PASSWORD));
      accessToken = session.accessToken;
      refreshToken = session.refreshToken;
    });

    test("Login returns a session with both tokens and a future expiry", async () => {
      const session = await patiently(() => gateway.login(DEMO_EMAIL, DEMO_PASSWORD));
      assert.ok(session.accessToken.length > 0);
      assert.ok(session.refreshToken.length > 0);
      assert.ok(session.expiresAt instanceof Date);
      assert.ok(session.expiresAt.getTime() > Date.now(), "expires in the future");
    });

    test("Login passes call options on as metadata, such as the end user's address", async () => {
      const sent: Headers[] = [];
      const capturing = new Gateway({
        ...transport.options,
        baseUrl: GATEWAY_URL,
        fetch: async (input, init) => {
          sent.push(new Headers(init?.headers));
          return fetch(input, init);
        },
      });
      await patiently(() =>
        capturing.login(DEMO_EMAIL, DEMO_PASSWORD, {
          headers: { "x-forwarded-for": "198.51.100.7" },
        }),
      );
      assert.equal(sent[0]?.get("x-forwarded-for"), "198.51.100.7");
    });

    test(`calls go out as ${transport.requestType} to the gateway's routes`, () => {
      const login = exchanges.find((e) => e.url.endsWith("/licensing.v1.UserService/Login"));
      assert.ok(login, "Login went through the recording fetch");
      assert.equal(login.method, "POST");
      assert.equal(login.requestType, transport.requestType);
      assert.match(login.responseType ?? "", transport.responseType);
    });

    test(transport.usesGet ? "GetProfile goes out as a GET, answered private, no-store" : "GetProfile goes out as a POST", async () => {
      await patiently(() => gateway.getProfile(accessToken));
      const call = exchanges.filter((e) => new URL(e.url).pathname === "/licensing.v1.UserService/GetProfile").at(-1);
      assert.ok(call, "GetProfile went through the recording fetch");
      if (transport.usesGet) {
        assert.equal(call.method, "GET");
        const query = new URL(call.url).searchParams;
        assert.equal(query.get("connect"), "v1");
        assert.equal(query.get("encoding"), transport.options.useBinaryFormat === false ? "json" : "proto");
        assert.equal(call.cacheControl, "private, no-store");
      } else {
        assert.equal(call.method, "POST");
      }
      assert.match(call.responseType ?? "", transport.responseType);
    });

    test("GetProfile returns the signed-in user's profile", async () => {
      const profile = await patiently(() => gateway.getProfile(accessToken));
      assert.equal(profile.email, DEMO_EMAIL);
      assert.ok(profile.id.length > 0);
      assert.ok(profile.name.length > 0);
      assert.equal(profile.role, "user");
      assert.ok(optionalDate(profile.createdAt) instanceof Date);
    });

    test("ListMyLicenses pages to the end, one license per page", async () => {
      const seen: string[] = [];
      let pageToken = "";
      let pages = 0;
      do {
        const page = await patiently(() => gateway.listLicensesPage(accessToken, { pageSize: 1, pageToken }));
        assert.ok(page.licenses.length <= 1, "page size is honoured");
        for (const license of page.licenses) {
          assert.ok(license.key.length > 0, "a license key");
          assert.equal(license.productName, "Demo Desktop App");
          seen.push(license.id);
        }
        pageToken = page.nextPageToken;
        pages++;
        assert.ok(pages <= 10, "paging terminates");
      } while (pageToken !== "");
      // The seeded demo licenses come first, oldest first; a sandbox that has
      // already served the README's IssueLicense (a shared one) lists more after
      // them, so the test does not depend on the sandbox's history.
      assert.deepEqual(seen.slice(0, DEMO_LICENSE_IDS.length), DEMO_LICENSE_IDS, "the demo licenses, oldest first");
      assert.equal(new Set(seen).size, seen.length, "no license twice across pages");
      assert.deepEqual(
        (await patiently(() => gateway.listAllLicenses(accessToken, { pageSize: 25 }))).map((l) => l.id),
        seen,
      );
    });

    test("RefreshSession returns a new session that works", async () => {
      const fresh = await patiently(() => gateway.refresh(refreshToken));
      assert.ok(fresh.accessToken.length > 0);
      const profile = await patiently(() => gateway.getProfile(fresh.accessToken));
      assert.equal(profile.email, DEMO_EMAIL);
    });

    test("RefreshSession with a bogus token is Unauthenticated / TOKEN_INVALID", async () => {
      const error = await failure(() => gateway.refresh(`not-a-refresh-token-${randomUUID()}`));
      assert.equal(error.code, Code.Unauthenticated);
      assert.equal(error.reason, "TOKEN_INVALID");
      assert.ok(error.needsSignIn);
    });

    test("SignUp creates a user who is signed in; a second SignUp is EMAIL_TAKEN", async () => {
      const email = `ts-${randomUUID()}@example.com`;
      const { userId, session } = await patiently(() =>
        gateway.signUp({
          email,
          password: "a-long-password",
          firstName: "Type",
          lastName: "Script",
        }),
      );
      assert.ok(userId.length > 0);
      const profile = await patiently(() => gateway.getProfile(session.accessToken));
      assert.equal(profile.id, userId);
      assert.equal(profile.email, email);
      assert.deepEqual(await patiently(() => gateway.listAllLicenses(session.accessToken)), []);

      const again = await failure(() =>
        gateway.signUp({ email, password: "a-long-password", firstName: "Type" }),
      );
      assert.equal(again.code, Code.AlreadyExists);
      assert.equal(again.reason, "EMAIL_TAKEN");
    });

    test("Logout revokes the access token", async () => {
      const session = await patiently(() => gateway.login(DEMO_EMAIL, DEMO_PASSWORD));
      await patiently(() => gateway.logout(session.accessToken));
      const error = await failure(() => gateway.getProfile(session.accessToken));
      assert.equal(error.code, Code.Unauthenticated);
      assert.equal(error.reason, "TOKEN_INVALID");
      assert.equal(error.message, "Your session has ended. Please sign in again.");
    });

    test("a wrong password is Unauthenticated with ErrorInfo reason INVALID_CREDENTIALS", async () => {
      const error = await failure(() => gateway.login(DEMO_EMAIL, "wrong-password"));
      assert.equal(error.code, Code.Unauthenticated);
      assert.equal(error.codeName, "Unauthenticated");
      assert.equal(error.reason, "INVALID_CREDENTIALS");
      assert.equal(error.metadata.upstreamStatus, undefined);
      assert.equal(error.serverMessage, "invalid email or password");
      assert.equal(error.message, "That email and password don't match. Check them and try again.");
      assert.equal(error.needsSignIn, false);
    });

    test("a call without a token is TOKEN_MISSING", async () => {
      const error = await failure(() => gateway.getProfile(""));
      assert.equal(error.code, Code.Unauthenticated);
      assert.equal(error.reason, "TOKEN_MISSING");
    });

    test("invalid input carries field violations into the friendly message", async () => {
      const error = await failure(() => gateway.login("", "short"));
      assert.equal(error.code, Code.InvalidArgument);
      assert.equal(error.reason, "INVALID_ARGUMENT");
      assert.ok(error.fieldViolations.length > 0, "BadRequest details decoded");
      assert.ok(
        error.fieldViolations.some((v) => v.field === "email"),
        JSON.stringify(error.fieldViolations),
      );
      assert.match(error.message, /^Please check the form: /);
    });

    test("an unreachable gateway is Unavailable without a reason", async () => {
      const nowhere = new Gateway({ ...transport.options, baseUrl: "http://127.0.0.1:9", timeoutMs: 2_000 });
      const error = await failure(() => nowhere.login(DEMO_EMAIL, DEMO_PASSWORD));
      assert.equal(error.reason, undefined);
      assert.ok([Code.Unavailable, Code.Unknown].includes(error.code), error.codeName);
    });
  });
}

describe("friendly messages", () => {
  test("a throttled sign-in says so, with the wait RetryInfo gave", () => {
    assert.equal(
      friendlyMessage(Code.ResourceExhausted, "TOO_MANY_ATTEMPTS", [], 4_200),
      "Too many sign-in attempts for this account or network. Please try again in 5 s.",
    );
  });

  test("a refusal for load is not called an outage", () => {
    for (const reason of ["UPSTREAM_BUDGET_EXHAUSTED", "OVERLOADED", "TOO_MANY_REQUESTS"]) {
      assert.match(friendlyMessage(Code.Unavailable, reason, []), /^We're handling a lot of requests right now\./);
    }
  });
});
