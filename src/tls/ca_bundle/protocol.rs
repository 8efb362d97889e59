//! The caBundle record protocol, pure: what the webhook configuration holds + what this replica
//! needs + now → the JSON patch that records this replica's needs and brings every caBundle to
//! the CAs still needed. No I/O: [`super::sync`] reads the configuration and sends the patch.
//!
//! The annotations on the webhook configuration:
//! - `serving.migrations.io/<replica>`: `"<unix time> <fingerprint>,<fingerprint>"`, the CAs a
//!   replica needs trusted, rewritten at every check (its heartbeat). A record older than
//!   `stale_after` is a replica gone: it is removed and its CAs are no longer kept for it.
//! - `claimed.serving.migrations.io/cas`: every CA some replica has recorded (the last
//!   [`MAX_CLAIMED`]): this mode's own CAs.
//! - `previous.serving.migrations.io/cas`: `"<fingerprint>=<first seen>,..."`, CAs found in a
//!   caBundle that no replica ever claimed (another TLS mode's), kept [`PREVIOUS_TTL_SECONDS`].

use std::collections::{BTreeMap, HashSet};

use base64::Engine as _;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, TestOperation};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use rustls::pki_types::CertificateDer;
use serde_json::Value;

use crate::tls::chain::{fingerprint, pem_ders, to_pem};

/// Annotation prefix, on the webhook configuration, of each replica's needed CAs.
pub(crate) const NEEDS_PREFIX: &str = "serving.migrations.io/";
/// Annotation recording CAs found in the caBundle that no replica claims (those of the pods of
/// another TLS mode, during a switch to selfManaged), with when they were first seen.
pub(crate) const PREVIOUS_KEY: &str = "previous.serving.migrations.io/cas";
/// Annotation listing the CAs replicas have recorded, most recent last.
pub(crate) const CLAIMED_KEY: &str = "claimed.serving.migrations.io/cas";
pub(crate) const MAX_CLAIMED: usize = 16;
/// How long unclaimed CAs stay trusted: longer than any rollout of the old pods.
pub(crate) const PREVIOUS_TTL_SECONDS: i64 = 600;

/// What the webhook configuration holds, as far as the protocol goes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Held {
    pub resource_version: String,
    /// `None` when the object has no annotations at all (the patch then creates the map).
    pub annotations: Option<BTreeMap<String, String>>,
    /// The webhooks in order: the patch addresses them by index.
    pub webhooks: Vec<HeldWebhook>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeldWebhook {
    pub name: String,
    /// The caBundle as stored: PEM bytes.
    pub ca_bundle: Option<Vec<u8>>,
}

impl Held {
    pub fn of(config: &MutatingWebhookConfiguration) -> Held {
        Held {
            resource_version: config.metadata.resource_version.clone().unwrap_or_default(),
            annotations: config.metadata.annotations.clone(),
            webhooks: config
                .webhooks
                .iter()
                .flatten()
                .map(|w| HeldWebhook {
                    name: w.name.clone(),
                    ca_bundle: w.client_config.ca_bundle.as_ref().map(|b| b.0.clone()),
                })
                .collect(),
        }
    }
}

/// What this replica needs of the caBundle.
#[derive(Debug, Clone, Copy)]
pub struct Needs<'a> {
    /// The replica's unique name (the pod name): its record's key.
    pub replica: &'a str,
    /// The CA the caBundle leads with (the Secret's, or the CA file's first). `None` when it
    /// could not be read: only this replica's record is refreshed, the caBundles left alone
    /// (this replica's view may be old).
    pub lead_ca: Option<&'a [u8]>,
    /// The CAs (DER) this replica needs trusted: the one it serves, and the one it is about to.
    pub mine: &'a [Vec<u8>],
    /// Seconds after which a peer's record is a replica gone.
    pub stale_after: i64,
}

/// The patch and what the caBundle is once it applies.
#[derive(Debug, Clone)]
pub struct Plan {
    /// RFC 6902, starting with a `test` of the resourceVersion (and of each webhook's name
    /// before writing its caBundle): it fails if the configuration changed since it was read.
    pub patch: json_patch::Patch,
    /// The first webhook's caBundle after the patch.
    pub bundle: Vec<CertificateDer<'static>>,
    /// Whether a CA of `mine` was not yet in a caBundle (the API server then needs a moment
    /// before it trusts a certificate from it).
    pub added_mine: bool,
    /// Whether a caBundle is rewritten.
    pub bundle_changed: bool,
}

/// The patch that records this replica's needs at `now` (Unix seconds) and brings the
/// caBundles to the CAs still needed. There is always one: the record is the heartbeat.
pub fn plan(held: &Held, needs: &Needs<'_>, now: i64) -> Plan {
    let my_key = needs_key(needs.replica);
    let empty = BTreeMap::new();
    let annotations = held.annotations.as_ref().unwrap_or(&empty);
    let my_fps: Vec<String> = needs.mine.iter().filter_map(|d| fingerprint(d)).collect();
    let records = Records::read(annotations, &my_key, needs.stale_after, now);

    // Every CA a replica has ever recorded (recent ones): those are this mode's own CAs.
    let recorded_claimed = annotations.get(CLAIMED_KEY).cloned().unwrap_or_default();
    let mut claimed = split_list(&recorded_claimed);
    let ours = my_fps
        .iter()
        .cloned()
        .chain(needs.lead_ca.and_then(fingerprint));
    for f in records.all.iter().cloned().chain(ours) {
        if !claimed.contains(&f) {
            claimed.push(f);
        }
    }
    let excess = claimed.len().saturating_sub(MAX_CLAIMED);
    claimed.drain(..excess);
    let claimed_value = claimed.join(",");

    // A CA trusted now that no replica ever recorded was put there by another TLS mode (a
    // switch from helm, or back to it): its pods may still serve during the rollout, so it is
    // kept for a while from when it was first seen. A CA some replica once recorded and none
    // needs now is a retired one, and goes.
    let recorded_previous = annotations.get(PREVIOUS_KEY).cloned().unwrap_or_default();
    let mut previous: BTreeMap<String, i64> = recorded_previous
        .split(',')
        .filter_map(|e| e.split_once('='))
        .filter_map(|(f, t)| Some((f.to_owned(), t.parse().ok()?)))
        .collect();
    if needs.lead_ca.is_some() {
        for webhook in &held.webhooks {
            let existing = webhook.ca_bundle.as_deref().map(pem_ders);
            for f in existing.iter().flatten().filter_map(|d| fingerprint(d)) {
                if !claimed.contains(&f) {
                    previous.entry(f).or_insert(now);
                }
            }
        }
    }
    previous.retain(|_, t| now - *t <= PREVIOUS_TTL_SECONDS);
    let mut needed = records.needed;
    needed.extend(previous.keys().cloned());
    let previous_value = previous
        .iter()
        .map(|(f, t)| format!("{f}={t}"))
        .collect::<Vec<_>>()
        .join(",");

    let mut ops = vec![PatchOperation::Test(TestOperation {
        path: pointer(&["metadata", "resourceVersion"]),
        value: Value::String(held.resource_version.clone()),
    })];
    if held.annotations.is_none() {
        ops.push(add(&["metadata", "annotations"], serde_json::json!({})));
    }
    let record = format!("{now} {}", my_fps.join(","));
    ops.push(add(
        &["metadata", "annotations", &my_key],
        Value::String(record),
    ));
    for key in &records.stale {
        ops.push(remove(&["metadata", "annotations", key]));
    }
    if needs.lead_ca.is_some() && claimed_value != recorded_claimed {
        let value = Value::String(claimed_value);
        ops.push(add(&["metadata", "annotations", CLAIMED_KEY], value));
    }
    if needs.lead_ca.is_some() && previous_value != recorded_previous {
        let path = ["metadata", "annotations", PREVIOUS_KEY];
        ops.push(if previous_value.is_empty() {
            remove(&path)
        } else {
            add(&path, Value::String(previous_value))
        });
    }

    let mut bundle = None;
    let mut bundle_changed = false;
    let mut added_mine = false;
    for (i, webhook) in held.webhooks.iter().enumerate() {
        let existing = webhook
            .ca_bundle
            .as_deref()
            .map(pem_ders)
            .unwrap_or_default();
        // Without the lead CA (unreadable), only this replica's record is refreshed.
        let Some(lead_ca) = needs.lead_ca else {
            bundle.get_or_insert(existing);
            continue;
        };
        let trusted: HashSet<String> = existing.iter().filter_map(|d| fingerprint(d)).collect();
        added_mine |= my_fps.iter().any(|f| !trusted.contains(f));
        let wanted = wanted_bundle(lead_ca, needs.mine, &existing, &needed);
        let pem: String = wanted.iter().map(|d| to_pem(d)).collect();
        if webhook.ca_bundle.as_deref() != Some(pem.as_bytes()) {
            bundle_changed = true;
            let index = i.to_string();
            // `test` first: if the list changed since we read it, the patch fails instead of
            // writing into the wrong webhook.
            ops.push(PatchOperation::Test(TestOperation {
                path: pointer(&["webhooks", &index, "name"]),
                value: Value::String(webhook.name.clone()),
            }));
            let encoded = base64::engine::general_purpose::STANDARD.encode(&pem);
            ops.push(add(
                &["webhooks", &index, "clientConfig", "caBundle"],
                Value::String(encoded),
            ));
        }
        bundle.get_or_insert_with(|| wanted.into_iter().map(CertificateDer::from).collect());
    }
    Plan {
        patch: json_patch::Patch(ops),
        bundle: bundle.unwrap_or_default(),
        added_mine,
        bundle_changed,
    }
}

/// What the replicas' records say, seen from one replica.
struct Records {
    /// Fingerprints the fresh records of the other replicas need.
    needed: HashSet<String>,
    /// Keys of the other replicas' records that are stale: removed by the patch.
    stale: Vec<String>,
    /// Every fingerprint in a record (this replica's and stale ones included), in order.
    all: Vec<String>,
}

impl Records {
    fn read(
        annotations: &BTreeMap<String, String>,
        my_key: &str,
        stale_after: i64,
        now: i64,
    ) -> Records {
        let mut records = Records {
            needed: HashSet::new(),
            stale: Vec::new(),
            all: Vec::new(),
        };
        for (key, value) in annotations
            .iter()
            .filter(|(k, _)| k.starts_with(NEEDS_PREFIX))
        {
            let (time, fps) = value.split_once(' ').unwrap_or((value, ""));
            let fps = split_list(fps);
            let fresh = time.parse::<i64>().is_ok_and(|t| now - t <= stale_after);
            records.all.extend(fps.iter().cloned());
            if key == my_key {
                continue;
            }
            if fresh {
                records.needed.extend(fps);
            } else {
                records.stale.push(key.clone());
            }
        }
        records
    }
}

fn split_list(list: &str) -> Vec<String> {
    list.split(',')
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect()
}

fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

fn add(path: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: pointer(path),
        value,
    })
}

fn remove(path: &[&str]) -> PatchOperation {
    PatchOperation::Remove(RemoveOperation {
        path: pointer(path),
    })
}

/// The annotation key of a replica's record (annotation names are at most 63 characters).
pub(crate) fn needs_key(replica: &str) -> String {
    let name: String = replica
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    format!(
        "{NEEDS_PREFIX}{}",
        name.trim_matches(|c: char| !c.is_ascii_alphanumeric())
    )
}

/// The CAs a caBundle should hold: the lead CA and the ones this replica needs first, then
/// every CA already trusted that a replica still needs (fingerprints in `needed`), once each.
pub fn wanted_bundle(
    lead_ca: &[u8],
    mine: &[Vec<u8>],
    existing: &[CertificateDer<'_>],
    needed: &HashSet<String>,
) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut seen = HashSet::new();
    let ours = std::iter::once(lead_ca.to_vec()).chain(mine.iter().cloned());
    let kept = existing
        .iter()
        .filter(|d| fingerprint(d).is_some_and(|f| needed.contains(&f)))
        .map(|d| d.to_vec());
    for der in ours.chain(kept) {
        if let Some(f) = fingerprint(&der) {
            if seen.insert(f) {
                out.push(der);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ca::Ca;
    use crate::tls::chain::der_of;

    #[test]
    fn the_bundle_keeps_what_a_replica_needs_and_drops_the_rest() {
        let ders: Vec<Vec<u8>> = (0..4)
            .map(|i| der_of(&Ca::generate(&format!("ca{i}"), 1).unwrap().cert_pem()))
            .collect();
        let fp = |i: usize| fingerprint(&ders[i]).unwrap();
        let existing: Vec<CertificateDer<'_>> = ders[1..]
            .iter()
            .map(|d| CertificateDer::from(d.as_slice()))
            .collect();
        // The lead CA (0) first, then this replica's (2), then others' still needed (3);
        // 1 is needed by nobody and goes.
        let needed = HashSet::from([fp(3)]);
        let bundle = wanted_bundle(&ders[0], &[ders[2].clone()], &existing, &needed);
        assert_eq!(
            bundle,
            vec![ders[0].clone(), ders[2].clone(), ders[3].clone()]
        );
        // No duplicates when the lead CA is also this replica's and already trusted.
        let bundle = wanted_bundle(&ders[1], &[ders[1].clone()], &existing, &HashSet::new());
        assert_eq!(bundle, vec![ders[1].clone()]);
    }

    #[test]
    fn a_record_key_is_a_valid_annotation_name() {
        assert_eq!(
            needs_key("migration-injector-7d9f-abcde"),
            "serving.migrations.io/migration-injector-7d9f-abcde"
        );
        assert_eq!(needs_key("-a/b:c-"), "serving.migrations.io/a-b-c");
        assert_eq!(needs_key(&"x".repeat(80)).len(), NEEDS_PREFIX.len() + 63);
    }
}
