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
