//! The fixed data every sandbox starts with. Ids are constants so tests and demo configs can
//! name them; only tokens (and so [`SandboxCryptlex::admin_pat`]) change per start.
//!
//! [`SandboxCryptlex::admin_pat`]: crate::SandboxCryptlex::admin_pat

/// The account alias login accepts (`accountAlias`).
pub const ACCOUNT_ALIAS: &str = "sandbox";
/// The account id login accepts (`accountId`).
pub const ACCOUNT_ID: &str = "3f1c2b8e-6d4a-4c1e-9b7a-2e5d8f0a1c34";
pub const PRODUCT_ID: &str = "8a6f4e2d-1b3c-4d5e-8f70-9a1b2c3d4e5f";
pub const PRODUCT_NAME: &str = "Demo Desktop App";
/// Accepted by `POST /v3/licenses`; any other non-empty template id is accepted as well.
pub const LICENSE_TEMPLATE_ID: &str = "c2d4e6f8-0a1b-4c3d-9e5f-7a8b9c0d1e2f";

pub const DEMO_USER_ID: &str = "5b7e9c1d-3f2a-4b6c-8d0e-1a2b3c4d5e6f";
pub const DEMO_EMAIL: &str = "demo@example.com";
pub const DEMO_PASSWORD: &str = "demo-password";
/// The demo user's two licenses, oldest first.
pub const DEMO_LICENSE_IDS: [&str; 2] = [
    "9e0b2f4a-6c5d-4e9f-b031-4d5e6f708192",
    "a01c3a5b-7d6e-4fa0-8142-5e6f708192a3",
];

pub const OTHER_USER_ID: &str = "6c8f0d2e-4a3b-4c7d-9e1f-2b3c4d5e6f70";
pub const OTHER_EMAIL: &str = "other@example.com";
pub const OTHER_PASSWORD: &str = "other-password";
pub const OTHER_LICENSE_ID: &str = "b12d4b6c-8e7f-4ab1-9253-6f708192a3b4";

/// The admin (role `admin`) who owns the seeded PAT. It has no password: it cannot log in.
pub const ADMIN_USER_ID: &str = "7d9a1e3f-5b4c-4d8e-af20-3c4d5e6f7081";
pub const ADMIN_EMAIL: &str = "admin@example.com";

/// The scopes of [`SandboxCryptlex::admin_pat`](crate::SandboxCryptlex::admin_pat).
pub const ALL_SCOPES: &[&str] = &[
    "account:read",
    "account:write",
    "activation:read",
    "license:read",
    "license:write",
    "licenseTemplate:read",
    "licenseTemplate:write",
    "product:read",
    "product:write",
    "user:read",
    "user:write",
    "webhook:read",
    "webhook:write",
    "personalAccessToken:write",
];

// === the customer-portal data (issue 15): machines, releases, features ===

/// The machines activated with the demo user's licenses, oldest first (the order
/// `GET /v3/me/activations` lists them): two on `DEMO_LICENSE_IDS[0]` (which allows three
/// activations and ten deactivations), then [`LIMITED_ACTIVATION_ID`] on `DEMO_LICENSE_IDS[1]`.
pub const DEMO_ACTIVATION_IDS: [&str; 3] = [
    "c3e5a7b9-1d2f-4a6b-8c0d-2e4f6a8b0c1d",
    "d4f6b8ca-2e3a-4b7c-9d1e-3f5a7b9c1d2e",
    LIMITED_ACTIVATION_ID,
];
/// The demo user's machine on `DEMO_LICENSE_IDS[1]`, a license whose deactivations are used
/// up (`totalDeactivations == allowedDeactivations == 2`): deleting it answers 409
/// `DEACTIVATION_LIMIT_REACHED`.
pub const LIMITED_ACTIVATION_ID: &str = "e5a7c9db-3f4b-4c8d-ae2f-4a6b8c0d2e3f";
/// The other user's machine, on `OTHER_LICENSE_ID` (for isolation tests).
pub const OTHER_ACTIVATION_ID: &str = "f6b8daec-4a5c-4d9e-bf3a-5b7c9d1e3f4a";

/// The published releases of `PRODUCT_NAME`, newest first (the order `GET /v3/me/releases`
/// lists them): `2.2.0-beta.1` on the `beta` channel, then `2.1.0` and `2.0.3` on `stable`.
/// Each has files for Windows, macOS and Linux.
pub const RELEASE_IDS: [&str; 3] = [
    "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
    "1b2c3d4e-5f6a-4b7c-9d8e-0f1a2b3c4d5e",
    "2c3d4e5f-6a7b-4c8d-ae9f-1a2b3c4d5e6f",
];
/// An unpublished release of `PRODUCT_NAME` (`2.2.0`): never listed to users.
pub const DRAFT_RELEASE_ID: &str = "3d4e5f6a-7b8c-4d9e-bf0a-2b3c4d5e6f7a";

/// The features entitled by `DEMO_LICENSE_IDS[0]` (the other licenses have none):
/// `cloud-sync` (no value, no expiry) and `seats` (value `5`, expiring with the license).
pub const FEATURE_IDS: [&str; 2] = [
    "4e5f6a7b-8c9d-4eaf-8b1c-3d4e5f6a7b8c",
    "5f6a7b8c-9d0e-4fb0-9c2d-4e5f6a7b8c9d",
];
