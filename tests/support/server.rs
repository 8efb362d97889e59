//! Starts the real HTTPS server on loopback port 0 with a freshly generated CA.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use migration_injector::certs::Ca;
use migration_injector::config::InjectorConfig;
use migration_injector::server::{self, AppState, Limits};
use migration_injector::tls::{self, CertStore};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

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
        let ca = Ca::generate("test CA", 1).unwrap();
        let pair = ca
            .issue_server(&["localhost".into()], &["127.0.0.1".parse().unwrap()], 1)
            .unwrap();
        let key =
            tls::certified_key(pair.cert_pem.as_bytes(), pair.key_pem.as_bytes(), "test").unwrap();
        let store = CertStore::new(key);
        Self::start_with(config, limits, ca, store).await
    }

    pub async fn start_with(
        config: InjectorConfig,
        limits: Limits,
        ca: Ca,
        store: Arc<CertStore>,
    ) -> TestServer {
        let state = AppState::new(config, limits.clone(), store.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(tls::server_config(store.clone()).unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let (admin_stop, admin_stopped) = oneshot::channel::<()>();
        let app = server::router(state.clone());
        let admin_app = server::admin_router(state.clone());
        let grace = Duration::from_secs(5);
        let handle = tokio::spawn(async move {
            let webhook = server::serve(
                listener,
                Some(acceptor),
                app,
                limits.clone(),
                async {
                    let _ = stopped.await;
                    let _ = admin_stop.send(());
                },
                grace,
            );
            let admin = server::serve(
                admin,
                None,
                admin_app,
                limits,
                async {
                    let _ = admin_stopped.await;
                },
                grace,
            );
            tokio::join!(webhook, admin);
        });
        TestServer {
            addr,
            admin: admin_addr,
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
