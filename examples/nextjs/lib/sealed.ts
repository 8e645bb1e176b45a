// Short-lived secrets the server must remember between two requests, sealed
// into an httpOnly cookie with AES-256-GCM: the email and password of a
// sign-in waiting for its two-factor code, and the token of a password reset
// link. The browser holds only ciphertext it can neither read nor forge; the
// secrets never appear in a URL, a page or client-side JavaScript.
//
// The key comes from PORTAL_SECRET (any long random string; the same on every
// instance of the site). Without it, each server process makes a random key
// at start-up: fine for one process, but a pending sign-in does not survive a
// restart or reach another instance.
import "server-only";
import { cookies } from "next/headers";

import { cookieBase } from "@/lib/session";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

declare global {
  // One key per process, shared by every module instance of this file.
  var __portalSealKey: Promise<CryptoKey> | undefined;
}

function key(): Promise<CryptoKey> {
  globalThis.__portalSealKey ??= (async () => {
    const secret = process.env.PORTAL_SECRET;
    if (secret === undefined || secret.length < 32) {
      if (secret !== undefined) throw new Error("PORTAL_SECRET must be at least 32 characters long");
      console.warn("PORTAL_SECRET is not set: pending sign-ins use a per-process key");
      const raw = crypto.getRandomValues(new Uint8Array(32));
      return crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
    }
    const raw = await crypto.subtle.digest("SHA-256", encoder.encode(`licensing-portal seal v1\0${secret}`));
    return crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
  })();
  return globalThis.__portalSealKey;
}

function base64url(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("base64url");
}

/** Seals `value` for `purpose` (also the cookie name); it opens until `ttlSeconds` from now. */
async function seal(purpose: string, value: unknown, ttlSeconds: number): Promise<string> {
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const plaintext = encoder.encode(JSON.stringify({ v: value, exp: Date.now() + ttlSeconds * 1000 }));
  const ciphertext = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv, additionalData: encoder.encode(purpose) },
    await key(),
    plaintext,
  );
  return `${base64url(iv)}.${base64url(new Uint8Array(ciphertext))}`;
}

/** The sealed value, or undefined when it was tampered with, expired or sealed for another purpose. */
async function open(purpose: string, sealed: string | undefined): Promise<unknown> {
  if (sealed === undefined || sealed === "") return undefined;
  const [iv, ciphertext] = sealed.split(".");
  if (!iv || !ciphertext) return undefined;
  try {
    const plaintext = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: Buffer.from(iv, "base64url"), additionalData: encoder.encode(purpose) },
      await key(),
      Buffer.from(ciphertext, "base64url"),
    );
    const { v, exp } = JSON.parse(decoder.decode(plaintext)) as { v: unknown; exp: number };
    return typeof exp === "number" && exp > Date.now() ? v : undefined;
  } catch {
    return undefined;
  }
}

/** One sealed cookie: `name` is also the purpose bound into the ciphertext. */
export function sealedCookie<T>(name: string, path: string, ttlSeconds: number, check: (value: unknown) => value is T) {
  return {
    async write(value: T): Promise<void> {
      (await cookies()).set(name, await seal(name, value, ttlSeconds), {
        ...(await cookieBase()),
        path,
        maxAge: ttlSeconds,
      });
    },
    async read(): Promise<T | undefined> {
      const value = await open(name, (await cookies()).get(name)?.value);
      return check(value) ? value : undefined;
    },
    async clear(): Promise<void> {
      (await cookies()).set(name, "", { ...(await cookieBase()), path, maxAge: 0 });
    },
  };
}

/** A sign-in whose password was right and that now needs the second factor. */
export interface PendingSignIn {
  email: string;
  password: string;
}

/** Five minutes to type the code; sent only to the sign-in pages. */
export const pendingSignIn = sealedCookie(
  "lgw_pending_sign_in",
  "/sign-in",
  5 * 60,
  (value): value is PendingSignIn =>
    typeof value === "object" &&
    value !== null &&
    typeof (value as PendingSignIn).email === "string" &&
    typeof (value as PendingSignIn).password === "string",
);

/** Whose password a reset link resets, and its token (from the mail). */
export interface PendingReset {
  userId?: string;
  email?: string;
  token: string;
}

/** As long as the sandbox's (and Cryptlex's) tokens live; sent only to the reset page. */
export const pendingReset = sealedCookie(
  "lgw_reset",
  "/reset-password",
  60 * 60,
  (value): value is PendingReset =>
    typeof value === "object" && value !== null && typeof (value as PendingReset).token === "string",
);
