//! Start-up: builds everything from [`Settings`], binds the listeners (port 0
//! works, for tests) and serves until told to stop.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context as _;
use http::HeaderValue;
use tokio::net::TcpListener;
use tonic::transport::{Identity, ServerTlsConfig};

use crate::config::Settings;
use crate::cryptlex::{self, ClientOptions};
use crate::grpc::server::{Introspection, PublicOptions, serve_public};
use crate::grpc::{Deadlines, UserApi, pb};
use crate::licensing::{Licensing, LicensingOptions};

/// A built, bound gateway, ready to serve.
#[derive(Debug)]
pub struct Application {
    public_listener: TcpListener,
    public_addr: SocketAddr,
    public_options: PublicOptions,
    public_introspection: Introspection,
    user_api: UserApi,
}

impl Application {
    /// Builds the gateway from validated settings and binds its listeners.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let cryptlex = cryptlex::Client::new(ClientOptions {
            base_url: settings.cryptlex.base_url.clone(),
            account: settings.cryptlex.account.clone(),
            request_timeout: settings.cryptlex.request_timeout,
            connect_timeout: settings.cryptlex.connect_timeout,
        })
        .context("building the cryptlex http client")?;
        let licensing = Licensing::new(
            cryptlex,
            LicensingOptions {
                sign_up_enabled: settings.sign_up_enabled,
                admin_token: settings.cryptlex.admin_token.clone(),
            },
        );
        let deadlines = Deadlines {
            default: settings.public.default_deadline,
            max: settings.public.max_deadline,
        };

        let public_tls = match &settings.public.tls {
            Some(files) => Some(ServerTlsConfig::new().identity(load_identity(files).await?)),
            None => None,
        };
        let cors_allowed_origins = settings
            .public
            .cors_allowed_origins
            .iter()
            .map(|origin| HeaderValue::from_str(origin))
            .collect::<Result<Vec<_>, _>>()
            .context("public.cors_allowed_origins")?;

        let public_listener = TcpListener::bind(settings.public.addr)
            .await
            .with_context(|| format!("binding the public listener on {}", settings.public.addr))?;
        let public_addr = public_listener.local_addr()?;

        let public_introspection = Introspection::new();
        public_introspection
            .health
            .set_serving::<pb::user_service_server::UserServiceServer<UserApi>>()
            .await;

        Ok(Self {
            public_listener,
            public_addr,
            public_options: PublicOptions {
                cors_allowed_origins,
                tls: public_tls,
            },
            public_introspection,
            user_api: UserApi::new(licensing, deadlines),
        })
    }

    /// The address the public listener is bound to.
    pub fn public_addr(&self) -> SocketAddr {
        self.public_addr
    }

    /// Serves until `shutdown` resolves, then reports NOT_SERVING and drains.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let health = self.public_introspection.health.clone();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            // Tell load balancers first, then stop accepting.
            health
                .set_not_serving::<pb::user_service_server::UserServiceServer<UserApi>>()
                .await;
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            let _ = stop_tx.send(true);
        });
        let mut public_stop = stop_rx.clone();
        serve_public(
            self.public_listener,
            self.user_api.into_server(),
            &self.public_introspection,
            self.public_options,
            async move {
                let _ = public_stop.wait_for(|stopped| *stopped).await;
            },
        )
        .await
        .context("serving the public listener")?;
        Ok(())
    }
}

async fn load_identity(files: &crate::config::TlsFiles) -> anyhow::Result<Identity> {
    let cert = tokio::fs::read(&files.cert)
        .await
        .with_context(|| format!("reading certificate {}", files.cert.display()))?;
    let key = tokio::fs::read(&files.key)
        .await
        .with_context(|| format!("reading private key {}", files.key.display()))?;
    Ok(Identity::from_pem(cert, key))
}
