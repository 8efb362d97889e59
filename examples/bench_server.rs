//! Reference servers for `bench/load.sh`, on the same HTTPS stack as `serve`
//! (`webhook::Server`: hyper + rustls + axum), answering with another handler:
//! - `constant`: reads the body and answers a constant AdmissionReview, the floor any handler
//!   pays;
//! - `typed`: the naive handler, decoding the whole review into typed k8s-openapi objects and
//!   re-serialising, for comparison.
//!
//! Usage: bench_server constant|typed PORT

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::header;
use axum::routing::post;
use axum::Router;
use k8s_openapi::api::apps::v1::Deployment;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use migration_injector::mutate::InjectorConfig;
use migration_injector::tls::{self, Ca, CertStore};
use migration_injector::webhook::{Limits, Server, ServerOptions};

// mimalloc: the handler's many small, short-lived allocations are cheaper than with glibc malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONSTANT: &[u8] = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"0","allowed":true}}"#;

async fn constant(_body: Bytes) -> ([(header::HeaderName, &'static str); 1], &'static [u8]) {
    ([(header::CONTENT_TYPE, "application/json")], CONSTANT)
}

/// What a straightforward typed handler does: decode the whole object, clone it, mutate the
/// typed struct, diff, serialise.
async fn typed(body: Bytes) -> ([(header::HeaderName, &'static str); 1], Vec<u8>) {
    let out = (|| -> Option<Vec<u8>> {
        let review: AdmissionReview<Deployment> = serde_json::from_slice(&body).ok()?;
        let req: AdmissionRequest<Deployment> = review.try_into().ok()?;
        let mut response = AdmissionResponse::from(&req);
        if let Some(obj) = &req.object {
            let before = serde_json::to_value(obj).ok()?;
            let mut after = obj.clone();
            if let Some(spec) = after.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
                spec.init_containers
                    .get_or_insert_with(Vec::new)
                    .push(Default::default());
            }
            let patch = json_patch::diff(&before, &serde_json::to_value(&after).ok()?);
            response = response.with_patch(patch).ok()?;
        }
        serde_json::to_vec(&response.into_review()).ok()
    })()
    .unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], out)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "constant".into());
    let port: u16 = args.next().unwrap_or_else(|| "18443".into()).parse()?;
    let ca = Ca::generate("bench", 1)?;
    let pair = ca.issue_server(&["localhost".into()], &["127.0.0.1".parse()?], 1)?;
    let store: Arc<CertStore> = CertStore::new(tls::certified_key(
        pair.cert_pem.as_bytes(),
        pair.key_pem.as_bytes(),
        "bench",
    )?);
    let app = match mode.as_str() {
        "constant" => Router::new().route("/mutate", post(constant)),
        "typed" => Router::new().route("/mutate", post(typed)),
        other => anyhow::bail!("unknown mode {other}"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let options = ServerOptions {
            listen: ([127, 0, 0, 1], port).into(),
            admin_listen: ([127, 0, 0, 1], 0).into(),
            limits: Limits::default(),
            grace: Duration::from_secs(1),
            shutdown_delay: Duration::ZERO,
        };
        Server::bind(InjectorConfig::default(), store, options)
            .await?
            .with_webhook_router(app)
            .run(std::future::pending(), std::future::pending())
            .await;
        Ok(())
    })
}
