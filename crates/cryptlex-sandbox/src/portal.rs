//! The customer-portal operations (issue 15): two-factor sign-in and enrolment, profile and
//! password changes, password reset, a license's feature entitlements, the user's machines and
//! their deactivation, and releases.
//!
//! Paths, bodies, status codes and security are Cryptlex's OpenAPI document's (S1, the copy in
//! `donhui/jentic-public-apis`, `apis/openapi/cryptlex.com/main/v3/meta/import/input-bundle.json`;
//! the project's cut-down copy is `contract/cryptlex-openapi-subset.json`). S1 declares which
//! statuses each operation may answer but not when, nor any error `code`. **This module is the
//! one place that says what the sandbox decided** where S1 is silent; the gateway's codes are
//! in its `cryptlex::ErrorCode`. Correct both together if the real API turns out to differ.
//!
//! # Decided answers
//!
//! Every error is Cryptlex's `{"message": ..., "code": ...}` body (`code` left out where the
//! table says none). Messages are the sandbox's wording: clients branch on status and code.
//!
//! | situation | status | code |
//! |---|---|---|
//! | login, right password, 2FA on, neither `twoFactorCode` nor `twoFactorRecoveryCode` | 400 | `TWO_FACTOR_CODE_REQUIRED` |
//! | login, wrong 2FA code, or an unknown or already used recovery code | 400 | `INVALID_TWO_FACTOR_CODE` |
//! | login, wrong email or password (2FA on or off: the second factor is asked only of whoever knows the password) | 400 | `AUTHENTICATION_FAILED` (unchanged) |
//! | `PATCH /v3/me` `twoFactorEnabled` true or false with a wrong or missing `twoFactorCode`; `POST /v3/me/2fa-recovery-codes` with a wrong code | 400 | `INVALID_TWO_FACTOR_CODE` |
//! | `POST /v3/me/2fa-recovery-codes` while 2FA is off | 409 | `TWO_FACTOR_NOT_ENABLED` |
//! | `PATCH /v3/me` `twoFactorEnabled: true` before any `POST /v3/me/2fa-secret`, or `twoFactorEnabled: false` while 2FA is off (S1 declares no 409 on `PATCH /v3/me`, so not the plan's 409) | 400 | `TWO_FACTOR_NOT_ENABLED` |
//! | `PATCH /v3/me` `email` that another user has (S1 declares no 409 here) | 400 | `DUPLICATE_FIELD_VALUE` |
//! | `POST /v3/users/{id}/update-password` with a wrong `oldPassword` | 400 | `INVALID_PASSWORD` |
//! | `POST /v3/users/{id}/update-password` for a user other than the token's | 403 | (none) |
//! | `POST /v3/users/{id}/reset-password` with an unknown, used or expired token, or one minted for another user | 400 | `INVALID_RESET_TOKEN` |
//! | `POST /v3/users/{id}/reset-password` or `reset-password-token`, unknown user id | 404 | (none) |
//! | `DELETE /v3/activations/{id}` when `allowedDeactivations != -1 && totalDeactivations >= allowedDeactivations` | 409 | `DEACTIVATION_LIMIT_REACHED` |
//! | `DELETE /v3/activations/{id}`, unknown id | 404 | (none) |
//! | `GET /v3/me/activations/{id}`, `GET /v3/me/licenses/{id}(/feature-entitlements)` not the caller's | 404 | (none) |
//! | `POST /v3/accounts/reset-password-request`, unknown email or other account alias | 202 | the same empty answer as a known one (no mail) |
//! | a body that breaks S1's schema (lengths, formats, required fields) | 400 | (none) |
//!
//! # Other decisions
//!
//! - **Security as S1 declares it.** `DELETE /v3/activations/{id}`,
//!   `POST /v3/accounts/reset-password-request` and `POST /v3/users/{id}/reset-password` need
//!   no token (one sent is ignored, even an invalid one). `reset-password-token` needs a PAT
//!   with `user:write`. Every `/v3/me*` operation and `update-password` take any valid token;
//!   a PAT acts as its owner (the seeded admin), as on `GET /v3/me`.
//! - **TOTP** ([`crate::totp`]): RFC 6238, SHA-1, 30 s, 6 digits, a base32 secret of 20 random
//!   bytes; codes of the previous, current and next step pass; the same code may be used again
//!   within its window (the RFC does not require replay protection; Cryptlex may differ). The
//!   otpauth URL is `otpauth://totp/Cryptlex%20Sandbox:<email>?secret=<BASE32>&issuer=Cryptlex%20Sandbox&algorithm=SHA1&digits=6&period=30`.
//! - **Enrolment.** `POST /v3/me/2fa-secret` makes a new *pending* secret (replacing an
//!   unconfirmed one) and changes nothing else; `PATCH /v3/me {twoFactorEnabled: true,
//!   twoFactorCode}` with a code of it turns 2FA on with that secret. Asked while 2FA is on, it
//!   is a re-enrolment: the active secret keeps working until a code of the new one confirms
//!   it. `twoFactorEnabled: true` while 2FA is on and nothing is pending checks the code against
//!   the active secret and changes nothing. Enabling does not create recovery codes.
//! - **Disabling** (`twoFactorEnabled: false`) needs a code of the active secret and forgets the
//!   secret and every recovery code. `twoFactorCode` without `twoFactorEnabled` is ignored.
//! - **Recovery codes**: 10 of the form `xxxxx-xxxxx` (11 characters, lowercase, compared
//!   ignoring case); each signs in once; new ones replace the old. `POST
//!   /v3/me/2fa-recovery-codes` accepts a TOTP code or an unused recovery code (6 to 12
//!   characters, as S1's `TwoFactorCodeRequestModel` allows), the latter being spent.
//! - **Login**: with 2FA on, `twoFactorCode` is checked when given (a recovery code beside it
//!   is then not looked at), else `twoFactorRecoveryCode`, which is spent. With 2FA off, both
//!   are ignored. `lastLoginAt` and `account.logged-in` happen only once every factor passed.
//! - **Profile** (`PATCH /v3/me`): `null` or absent leaves a field as it is; `googleSsoEnabled`
//!   is accepted and ignored (the sandbox has no SSO). The 2FA step runs before any other
//!   change, so a refused code changes nothing. Every accepted PATCH moves `updatedAt` and fires
//!   `user.updated` with the `UserDto`. Lengths as S1: `firstName` 1..256, `lastName` 0..256,
//!   `email` an address of any length, `twoFactorCode` exactly 6.
//! - **Passwords**: after a change or a reset, the user's access and refresh tokens stay valid
//!   (Cryptlex's behaviour is undocumented).
//! - **Reset tokens**: single use, valid 1 hour, URL-safe (base64url of 32 random bytes, so the
//!   URL encoding S1 mentions is a no-op); minted by `reset-password-request` (mailed) or
//!   `reset-password-token` (returned). A new token does not invalidate older unused ones, and a
//!   reset spends only the token it used.
//! - **Reset mails**: sent only for an existing user of this account (`accountAlias` absent,
//!   empty or `sandbox`). The link is `{origin}/reset-password?userId={id}&token={token}`, with
//!   the request's `Origin` header when it is an absolute `http(s)` origin, else
//!   `https://portal.sandbox.cryptlex.invalid`. Tests read them with
//!   [`Controls::mails`](crate::Controls::mails) or `GET /__sandbox/mails`.
//! - **Deactivation** (`DELETE /v3/activations/{id}`) removes the activation and, on its
//!   license, `totalActivations -= 1`, `totalDeactivations += 1` and `updatedAt` moves; it is
//!   allowed on revoked, suspended or expired licenses. Webhook `activation.deleted` with the
//!   activation as `UserActivationDto` (Cryptlex would send its admin `ActivationDto`; both
//!   carry `licenseId`).
//! - **Ownership** follows the license: a user's activations are those of the licenses whose
//!   `userId` is theirs now. A `licenseId` filter naming someone else's license finds nothing.
//! - **Lists**: `GET /v3/me/activations` in creation order (`createdAt` ascending), filters
//!   `licenseId[eq|ne|in|nin]`, sorts by `createdAt`, `updatedAt`, `lastSyncedAt`, `hostname`,
//!   `os`. `GET /v3/me/releases`: published releases of the products the user has a license
//!   for (any state), newest `publishedAt` first; filter `product.displayName[...]` with every
//!   text operator (`eq`, `ne`, `in`, `nin` exact; `sw`, `ew`, `cn`, `nc` ignoring case); sorts
//!   by `publishedAt`, `createdAt`, `updatedAt`, `version`, `name`. Drafts are never listed.
//!   Paging and unknown parameters as every sandbox list (`page`, `limit` 1..100, default 10;
//!   an unknown filter is a 400).
//! - **Download links** point at `https://downloads.sandbox.cryptlex.invalid/...`, which does
//!   not resolve: the sandbox serves no files.
//!
//! # Layout
//! - `portal/account.rs`: 2FA, profile, password and reset handlers, and login's second step.
//! - `portal/machines.rs`: feature entitlements, activations, deactivation and releases.
//! - `portal/state.rs`: the records and their rules, part of the account's `Domain`.
//! - `portal/wire.rs`: the JSON shapes.

mod account;
mod machines;
mod state;
mod wire;

use std::sync::Arc;

use axum::routing::{MethodRouter, delete, get, patch, post};

use crate::shared::Shared;

pub use state::{ActivationRecord, GeoLocationRecord, PasswordResetMail};

pub(crate) use account::check_login_second_factor;
pub(crate) use state::{PortalState, unix_seconds};

/// The handler of one portal entry of [`API_OPERATIONS`](crate::API_OPERATIONS).
pub(crate) fn handler(method: &str, path: &str) -> MethodRouter<Arc<Shared>> {
    match (method, path) {
        ("PATCH", "/v3/me") => patch(account::update_profile),
        ("POST", "/v3/me/2fa-secret") => post(account::create_two_factor_secret),
        ("POST", "/v3/me/2fa-recovery-codes") => post(account::create_recovery_codes),
        ("POST", "/v3/users/{id}/update-password") => post(account::update_password),
        ("POST", "/v3/accounts/reset-password-request") => post(account::request_password_reset),
        ("POST", "/v3/users/{id}/reset-password-token") => post(account::create_reset_token),
        ("POST", "/v3/users/{id}/reset-password") => post(account::reset_password),
        ("GET", "/v3/me/licenses/{id}/feature-entitlements") => get(machines::feature_entitlements),
        ("GET", "/v3/me/activations") => get(machines::list_activations),
        ("GET", "/v3/me/activations/{id}") => get(machines::get_activation),
        ("DELETE", "/v3/activations/{id}") => delete(machines::delete_activation),
        ("GET", "/v3/me/releases") => get(machines::list_releases),
        _ => unreachable!("{method} {path} is listed in API_OPERATIONS without a handler"),
    }
}
