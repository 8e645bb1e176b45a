// Configuration, from the environment only (twelve-factor style: a
// Kubernetes Deployment sets these from a ConfigMap and Secrets).
//
// Nothing read here is ever logged except through `describeConfig`, which
// names the files and addresses but never the webhook secret.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createSecureContext } from "node:tls";

export interface Config {
  /** Where the receiver listens. */
  host: string;
  port: number;
  /** The path Stripe posts to. */
  webhookPath: string;
  /** Stripe's signing secret for this endpoint (`whsec_...`). A secret. */
  webhookSecret: string;
  /** Largest accepted request body; Stripe's events are a few KiB. */
  maxBodyBytes: number;
  /** The gateway's internal listener, e.g. `https://localhost:50052`. */
  gatewayUrl: string;
  /** The name to check the gateway's certificate against when it differs
   * from the URL's host (for example when connecting by IP). */
  gatewayServerName: string | undefined;
  /** PEM contents: the CA that signed the gateway's certificate, and this
   * service's client certificate and key. The key is a secret. */
  tls: { ca: Buffer; cert: Buffer; key: Buffer };
  /** The files they came from (for the start-up log). */
  tlsFiles: { ca: string; cert: string; key: string };
  /** The whole time one webhook may spend calling the gateway, retries
   * included, before it answers 503 and leaves the retry to Stripe. */
  callBudgetMs: number;
  /** The product to license when the Checkout Session's metadata names
   * none; undefined lets the gateway use its default product. */
  defaultProductId: string | undefined;
  /** Added to a renewal's period end, to cover the days Stripe spends
   * retrying a failed renewal payment (dunning). 0 by default. */
  renewalGraceSeconds: number;
}

/** A configuration problem, with a message naming the variable. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

type Env = Record<string, string | undefined>;

function text(env: Env, name: string, fallback?: string): string {
  const value = env[name]?.trim();
  if (value) return value;
  if (fallback !== undefined) return fallback;
  throw new ConfigError(`${name} is required`);
}

function optional(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value ? value : undefined;
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name]?.trim();
  if (!raw) return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(`${name} must be a whole number, got ${JSON.stringify(raw)}`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(`${name} must be between ${min} and ${max}`);
  return value;
}

function pemFile(name: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    const why = error instanceof Error && "code" in error ? String(error.code) : String(error);
    throw new ConfigError(`${name}: cannot read ${path} (${why})`);
  }
}

/** Reads and checks the configuration; throws a `ConfigError` naming the
 * first problem. */
export function loadConfig(env: Env = process.env): Config {
  const webhookSecret = text(env, "STRIPE_WEBHOOK_SECRET");
  const certDir = optional(env, "LICENSING_GATEWAY_CERT_DIR");
  const inDir = (file: string) => (certDir ? join(certDir, file) : undefined);
  const caFile = text(env, "LICENSING_GATEWAY_CA_FILE", inDir("ca.pem"));
  const certFile = text(env, "LICENSING_GATEWAY_CERT_FILE", inDir("payment-service.pem"));
  const keyFile = text(env, "LICENSING_GATEWAY_KEY_FILE", inDir("payment-service.key"));

  const gatewayUrl = text(env, "LICENSING_GATEWAY_URL", "https://localhost:50052");
  let parsed: URL;
  try {
    parsed = new URL(gatewayUrl);
  } catch {
    throw new ConfigError(`LICENSING_GATEWAY_URL is not a URL: ${JSON.stringify(gatewayUrl)}`);
  }
  if (parsed.protocol !== "https:") {
    throw new ConfigError("LICENSING_GATEWAY_URL must be https:// (the internal listener requires mutual TLS)");
  }

  const webhookPath = text(env, "WEBHOOK_PATH", "/stripe/webhook");
  if (!webhookPath.startsWith("/")) throw new ConfigError("WEBHOOK_PATH must start with /");
  const settings = {
    host: text(env, "HOST", "127.0.0.1"),
    port: integer(env, "PORT", 4242, 0, 65535),
    webhookPath,
    webhookSecret,
    maxBodyBytes: integer(env, "MAX_BODY_BYTES", 1024 * 1024, 1024, 64 * 1024 * 1024),
    gatewayUrl: gatewayUrl.replace(/\/+$/, ""),
    gatewayServerName: optional(env, "LICENSING_GATEWAY_SERVER_NAME"),
    callBudgetMs: integer(env, "LICENSING_GATEWAY_CALL_BUDGET_MS", 8_000, 100, 60_000),
    defaultProductId: optional(env, "LICENSE_DEFAULT_PRODUCT_ID"),
    renewalGraceSeconds: integer(env, "LICENSE_RENEWAL_GRACE_SECONDS", 0, 0, 90 * 24 * 3600),
  };

  const tls = {
    ca: pemFile("LICENSING_GATEWAY_CA_FILE", caFile),
    cert: pemFile("LICENSING_GATEWAY_CERT_FILE", certFile),
    key: pemFile("LICENSING_GATEWAY_KEY_FILE", keyFile),
  };
  try {
    // Fails now, not at the first webhook, on a malformed PEM or a key that
    // does not belong to the certificate.
    createSecureContext(tls);
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    throw new ConfigError(`the TLS files ${caFile}, ${certFile}, ${keyFile} are not usable: ${why}`);
  }

  return { ...settings, tls, tlsFiles: { ca: caFile, cert: certFile, key: keyFile } };
}

/** What to print at start-up: everything but the secrets. */
export function describeConfig(config: Config): Record<string, unknown> {
  return {
    webhookPath: config.webhookPath,
    gateway: config.gatewayUrl,
    gatewayServerName: config.gatewayServerName,
    caFile: config.tlsFiles.ca,
    certFile: config.tlsFiles.cert,
    keyFile: config.tlsFiles.key,
    callBudgetMs: config.callBudgetMs,
    defaultProductId: config.defaultProductId ?? "(the gateway's default)",
    renewalGraceSeconds: config.renewalGraceSeconds,
  };
}
