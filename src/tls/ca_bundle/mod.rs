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

/// A webhook configuration as the API server holds it, for tests that answer the caBundle
/// protocol's requests.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::BTreeMap;

    use base64::Engine as _;
    use serde_json::{json, Value};

    use crate::api_mock::Call;
    use crate::tls::chain::{pem_ders, to_pem};

    /// The webhook configuration `wh`.
    pub(crate) const CONFIG_PATH: &str =
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/wh";

    /// Configuration `wh` with these annotations (`Null`: none) and one webhook per entry of
    /// `bundles`, each with these CAs (DER) as its caBundle (`None`: no caBundle).
    pub(crate) fn config(annotations: Value, bundles: &[Option<&[Vec<u8>]>]) -> Value {
        let webhooks: Vec<Value> = bundles
            .iter()
            .enumerate()
            .map(|(i, cas)| {
                let mut client_config = json!({"service": {"namespace": "ns", "name": "svc"}});
                if let Some(cas) = cas {
                    let pem: String = cas.iter().map(|d| to_pem(d)).collect();
                    client_config["caBundle"] =
                        Value::String(base64::engine::general_purpose::STANDARD.encode(pem));
                }
                json!({
                    "name": format!("w{i}.migrations.io"),
                    "clientConfig": client_config,
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                })
            })
            .collect();
        let mut metadata = json!({"name": "wh", "resourceVersion": "1"});
        if !annotations.is_null() {
            metadata["annotations"] = annotations;
        }
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": metadata,
            "webhooks": webhooks,
        })
    }

    /// Applies the JSON patch of `call` (checked to be one) to `current` as the API server
    /// would, and answers with the result; returns it.
    pub(crate) fn apply(current: &Value, call: Call) -> Value {
        assert_eq!(call.content_type, "application/json-patch+json");
        let patch: json_patch::Patch = serde_json::from_value(call.body.clone()).unwrap();
        let mut doc = current.clone();
        json_patch::patch(&mut doc, &patch).unwrap();
        let version: u64 = doc["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        doc["metadata"]["resourceVersion"] = Value::String((version + 1).to_string());
        call.json(200, &doc);
        doc
    }

    /// The annotations of a configuration.
    pub(crate) fn annotations(doc: &Value) -> BTreeMap<String, String> {
        serde_json::from_value(doc["metadata"]["annotations"].clone()).unwrap_or_default()
    }

    /// The CAs (DER) of webhook `i`'s caBundle.
    pub(crate) fn bundle(doc: &Value, i: usize) -> Vec<Vec<u8>> {
        let b64 = doc["webhooks"][i]["clientConfig"]["caBundle"]
            .as_str()
            .unwrap_or_default();
        let pem = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        pem_ders(&pem).iter().map(|d| d.to_vec()).collect()
    }
}
