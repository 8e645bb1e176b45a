//! Parsed types the rest of the crate speaks.
//!
//! Every value that crosses the public edge is parsed here once (`parse`,
//! `TryFrom`) into a newtype with private fields, so the use cases never
//! re-validate and cannot be handed an unchecked string. Secrets (passwords,
//! tokens) are wrapped in `secrecy` types whose `Debug` is redacted.
//!
//! This module knows nothing of gRPC or HTTP.

mod account;
mod client;
mod context;
mod identifiers;
mod license;
mod portal;
mod secrets;
mod validation;

pub use account::{
    AccountHolder, MintedResetToken, ProfileUpdate, RecoveryCode, RecoveryCodes, ResetToken,
    SecondFactor, TwoFactorCode, TwoFactorEnrollment,
};
pub use client::{AllowList, AllowedClient, ClientIdentity, Operation};
pub use context::{ClientAddress, ReadShare, RequestContext};
pub use identifiers::{CryptlexId, Email, MetadataMap, PersonName, RequestId, SubscriptionId};
pub use license::{
    IssuedLicense, LicenseStatus, Page, PageRequest, Session, UserLicense, UserProfile,
};
pub use portal::{
    Activation, ActivationPage, ActivationsRequest, FeatureEntitlement, FilterText, LicenseDetail,
    Release, ReleaseFile, ReleasePage, ReleasesRequest, readable_place,
};
#[cfg(test)]
pub(crate) use secrets::counts as token_counts;
pub use secrets::{AdminToken, Password, RefreshToken, UserToken};
pub use validation::{FieldViolation, ValidationErrors};
