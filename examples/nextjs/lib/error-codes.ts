// The site's error code for each failed gateway call (see messages.ts).
import "server-only";
import { Code, type GatewayError } from "@licensing-gateway/client";

import type { ErrorCode } from "@/lib/messages";

/** The site's error code for a failed gateway call. */
export function codeFor(error: GatewayError): ErrorCode {
  switch (error.reason) {
    case "INVALID_CREDENTIALS":
      return "invalid-credentials";
    case "TOKEN_MISSING":
    case "TOKEN_INVALID":
      return "session-ended";
    case "INVALID_TWO_FACTOR_CODE":
      return "invalid-two-factor-code";
    case "TWO_FACTOR_NOT_ENABLED":
      return "two-factor-not-enabled";
    case "WRONG_CURRENT_PASSWORD":
      return "wrong-current-password";
    case "RESET_TOKEN_INVALID":
      return "reset-link-invalid";
    case "EMAIL_TAKEN":
      return "email-taken";
    case "SIGN_UP_DISABLED":
      return "sign-up-disabled";
    case "DEACTIVATION_LIMIT_REACHED":
      return "deactivation-limit";
    case "NOT_FOUND":
      return "not-found";
    case "INVALID_ARGUMENT":
      return "invalid-form";
    case "TOO_MANY_ATTEMPTS":
      return "too-many-attempts";
    case "TOO_MANY_REQUESTS":
    case "UPSTREAM_RATE_LIMITED":
    case "UPSTREAM_BUDGET_EXHAUSTED":
    case "OVERLOADED":
      return "busy";
    case "UPSTREAM_CIRCUIT_OPEN":
    case "UPSTREAM_UNAVAILABLE":
    case "UPSTREAM_TIMEOUT":
    case "UPSTREAM_BAD_RESPONSE":
      return "unavailable";
  }
  switch (error.code) {
    case Code.NotFound:
      return "not-found";
    case Code.InvalidArgument:
      return "invalid-form";
    case Code.Unavailable:
    case Code.DeadlineExceeded:
      return "unavailable";
    default:
      return "generic";
  }
}
