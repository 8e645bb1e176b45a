//! The internal listener's first check: a caller whose certificate is not on
//! the allow-list is refused (`PERMISSION_DENIED`, `CLIENT_NOT_ALLOWED`)
//! before anything of its call is read, so that a certificate the CA signed
//! for another purpose cannot hold call slots, streams or memory.
//!
//! The adapter checks again (it needs the caller's policy); this layer only
//! makes sure nothing else happens first. Health checks and reflection pass:
//! they cost nothing, reveal nothing beyond the contract this listener
//! serves, and tools such as `buf curl` need reflection to show the caller
//! its own `PERMISSION_DENIED`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::{IssuanceApi, auth};

/// Paths every verified client may call.
const OPEN_PATH_PREFIXES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Refuses callers that are not on `api`'s allow-list.
#[derive(Debug, Clone)]
pub(super) struct ClientGateLayer {
    api: IssuanceApi,
}

impl ClientGateLayer {
    pub(super) fn new(api: IssuanceApi) -> Self {
        Self { api }
    }
}

impl<S> tower::Layer<S> for ClientGateLayer {
    type Service = ClientGate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientGate {
            inner,
            api: self.api.clone(),
        }
    }
}

/// The service built by [`ClientGateLayer`].
#[derive(Debug, Clone)]
pub(super) struct ClientGate<S> {
    inner: S,
    api: IssuanceApi,
}

type Response = http::Response<tonic::body::Body>;

impl<S, ReqBody> tower::Service<http::Request<ReqBody>> for ClientGate<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = Response>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let path = request.uri().path();
        if !OPEN_PATH_PREFIXES
            .iter()
            .any(|prefix| path.starts_with(prefix))
        {
            // `auth` reads certificates from a tonic request; hand it the
            // connection's TLS info and nothing else.
            let mut probe = tonic::Request::new(());
            if let Some(tls) = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>() {
                probe.extensions_mut().insert(tls.clone());
            }
            if let Err(denied) = self.api.admits(&auth::peer_identities(&probe)) {
                let status = Status::from(denied);
                return Box::pin(async move { Ok(status.into_http()) });
            }
        }
        Box::pin(self.inner.call(request))
    }
}
