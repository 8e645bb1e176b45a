// Configuration errors name the variable or file, and never echo the secret.

import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { it } from "node:test";

import { ConfigError, loadConfig } from "../../src/config";

const dir = mkdtempSync(join(tmpdir(), "payment-service-config-"));
for (const file of ["ca.pem", "payment-service.pem", "payment-service.key"]) {
  writeFileSync(join(dir, file), "not a PEM file\n");
}
const base = { STRIPE_WEBHOOK_SECRET: "whsec_config_test_secret", LICENSING_GATEWAY_CERT_DIR: dir };

function refusal(env: Record<string, string>): string {
  try {
    loadConfig(env);
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    assert.ok(!error.message.includes("whsec_config_test_secret"), "the message echoes the secret");
    return error.message;
  }
  assert.fail("the configuration was accepted");
}

it("requires the webhook secret", () => {
  assert.match(refusal({ LICENSING_GATEWAY_CERT_DIR: dir }), /STRIPE_WEBHOOK_SECRET is required/);
});

it("requires https for the gateway", () => {
  assert.match(refusal({ ...base, LICENSING_GATEWAY_URL: "http://localhost:50052" }), /must be https/);
});

it("names a certificate file it cannot read", () => {
  const message = refusal({ ...base, LICENSING_GATEWAY_KEY_FILE: join(dir, "missing.key") });
  assert.match(message, /LICENSING_GATEWAY_KEY_FILE: cannot read .*missing\.key \(ENOENT\)/);
});

it("refuses TLS files that are not a usable certificate and key, naming them", () => {
  assert.match(refusal(base), /the TLS files .*ca\.pem.*payment-service\.pem.*payment-service\.key are not usable/);
});

it("checks numbers", () => {
  assert.match(refusal({ ...base, PORT: "http" }), /PORT must be a whole number/);
  assert.match(refusal({ ...base, LICENSING_GATEWAY_CALL_BUDGET_MS: "99999999" }), /between/);
});
