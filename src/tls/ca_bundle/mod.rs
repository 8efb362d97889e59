//! The caBundle kept by the replicas themselves (self-managed certificates, and certificate
//! files with `--manage-ca-bundle`). A CA change loses no request: each replica records on the
//! webhook configuration (annotation `serving.migrations.io/<replica>`) the CAs it needs
//! trusted — the one it serves, and the one it is about to serve — and the caBundle keeps every
//! CA some live replica needs. A replica puts a new CA into the caBundle before it serves a
//! certificate from it, and an old CA leaves the caBundle only when no replica has needed it for
//! a few check intervals.
//!
//! [`protocol`] is the rule, pure (configuration + needs + now → JSON patch); [`sync`] is the
//! I/O around it (get, patch, retry on conflict).

pub mod protocol;
pub mod sync;

use std::time::Duration;

pub use protocol::{plan, wanted_bundle, Held, HeldWebhook, Needs, Plan};
pub use sync::SyncError;

/// The webhook configuration whose caBundle a replica keeps, and the replica's unique name,
/// under which it records the CAs it needs trusted.
#[derive(Debug, Clone)]
pub struct BundleTarget {
    pub webhook_config: String,
    pub replica: String,
}

/// Time for the API server to load a changed caBundle before a certificate from a new CA is
/// served (its webhook configuration informer takes well under a second).
pub(crate) const BUNDLE_PICKUP: Duration = Duration::from_secs(2);

/// Readiness until a check has seen the caBundle trust what this replica serves.
pub(crate) fn not_yet_confirmed(webhook_config: &str) -> String {
    format!("the caBundle of {webhook_config} is not yet confirmed to trust the served certificate")
}
