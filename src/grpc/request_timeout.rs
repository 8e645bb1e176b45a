//! A bound on every call, whatever the caller asks for: the backstop behind
//! the use cases' own deadlines (`public.max_deadline`) and the body timeout,
//! for whatever they do not cover (a health check whose body never ends, a
//! hung handler).
//!
//! tower's `TimeoutLayer` ends the call; [`answer_elapsed`] turns its error
//! into `DEADLINE_EXCEEDED` from the one status table. tonic's own
//! `Server::timeout` would answer outside our stack, with a bare `CANCELLED`
//! without `ErrorInfo` that the RPC metrics never see.

use tonic::Status;

use crate::licensing::LicensingError;

type Response = http::Response<tonic::body::Body>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Answers a call that `tower::timeout` ended as `DEADLINE_EXCEEDED`, and
/// passes every other outcome on (for `tower::util::MapResultLayer`).
pub(super) fn answer_elapsed(result: Result<Response, BoxError>) -> Result<Response, BoxError> {
    match result {
        Err(error) if error.is::<tower::timeout::error::Elapsed>() => {
            Ok(Status::from(LicensingError::DeadlineExceeded).into_http())
        }
        other => other,
    }
}
