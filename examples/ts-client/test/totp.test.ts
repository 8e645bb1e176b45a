import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { base32Decode, totp } from "./totp";

describe("the tests' TOTP", () => {
  test("matches RFC 6238's SHA-1 test vectors (last six digits)", () => {
    // RFC 6238 appendix B: the ASCII secret "12345678901234567890".
    const secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    assert.equal(base32Decode(secret).toString("ascii"), "12345678901234567890");
    assert.equal(totp(secret, 59_000), "287082");
    assert.equal(totp(secret, 1_111_111_109_000), "081804");
    assert.equal(totp(secret, 1_234_567_890_000), "005924");
    assert.equal(totp(secret, 20_000_000_000_000), "353130");
  });
});
