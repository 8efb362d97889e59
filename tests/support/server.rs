//! Starts the real HTTPS server on loopback port 0 with a freshly generated CA.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use migration_injector::mutate::InjectorConfig;
use migration_injector::tls::{self, Ca, CertStore};
use migration_injector::webhook::{AppState, Limits, Server, ServerOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestServer {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub ca: Ca,
    pub store: Arc<CertStore>,
    pub state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(config: InjectorConfig, limits: Limits) -> TestServer {
        Self::start_delayed(config, limits, Duration::ZERO).await
    }

    /// The library's own server, as `serve` runs it, on loopback port 0.
    pub async fn start_with(
        config: InjectorConfig,
        limits: Limits,
        ca: Ca,
        store: Arc<CertStore>,
    ) -> TestServer {
        Self::start_with_delay(config, limits, ca, store, Duration::ZERO).await
    }

    /// As [`TestServer::start`], with a shutdown delay: after `stop`, readiness fails and the
    /// server keeps serving for `delay` before it closes its listener, as in a pod.
    pub async fn start_delayed(
        config: InjectorConfig,
        limits: Limits,
        delay: Duration,
    ) -> TestServer {
        let ca = Ca::generate("test CA", 1).unwrap();
        let pair = ca
            .issue_server(&["localhost".into()], &["127.0.0.1".parse().unwrap()], 1)
            .unwrap();
        let key =
            tls::certified_key(pair.cert_pem.as_bytes(), pair.key_pem.as_bytes(), "test").unwrap();
        Self::start_with_delay(config, limits, ca, CertStore::new(key), delay).await
    }

    async fn start_with_delay(
        config: InjectorConfig,
        limits: Limits,
        ca: Ca,
        store: Arc<CertStore>,
        shutdown_delay: Duration,
    ) -> TestServer {
        let options = ServerOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            limits,
            grace: Duration::from_secs(5),
            shutdown_delay,
        };
        let server = Server::bind(config, store.clone(), options).await.unwrap();
        let addr = server.webhook_addr().unwrap();
        let admin = server.admin_addr().unwrap();
        let state = server.state();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            server
                .run(
                    async {
                        let _ = stopped.await;
                    },
                    std::future::pending(),
                )
                .await;
        });
        TestServer {
            addr,
            admin,
            ca,
            store,
            state,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// A client that trusts only this server's CA, resolving localhost to the server.
    pub fn client(&self) -> reqwest::Client {
        client_for(&self.ca.cert_pem(), self.addr)
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap();
        }
    }
}

pub fn client_for(ca_pem: &str, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .resolve("localhost", addr)
        .use_rustls_tls()
        .build()
        .unwrap()
}

/// A raw TLS connector that trusts only `ca_pem` and offers `alpn` (empty: none).
pub fn tls_connector(ca_pem: &str, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let mut config =
        rustls::ClientConfig::builder_with_provider(migration_injector::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}
