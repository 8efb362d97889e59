//! The caBundle record protocol, pure: what the webhook configuration holds + what this replica
//! needs + now → the JSON patch that records this replica's needs and brings every caBundle to
//! the CAs still needed. No I/O: [`super::sync`] reads the configuration and sends the patch.
//!
//! The annotations on the webhook configuration:
//! - `serving.migrations.io/<replica>`: `"<unix time> <fingerprint>,<fingerprint>"`, the CAs a
//!   replica needs trusted, rewritten at every check (its heartbeat). A record older than
//!   `stale_after` is a replica gone: it is removed and its CAs are no longer kept for it.
//! - `claimed.serving.migrations.io/cas`: every CA some replica has recorded (the last
//!   16): this mode's own CAs.
//! - `previous.serving.migrations.io/cas`: `"<fingerprint>=<first seen>,..."`, CAs found in a
//!   caBundle that no replica ever claimed (another TLS mode's), kept ten minutes.

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

    const NOW: i64 = 1_000_000;
    const STALE_AFTER: i64 = 30;
    const R1: &str = "serving.migrations.io/r1";
    const R2: &str = "serving.migrations.io/r2";

    /// CAs A, B, C, D as DER.
    fn cas() -> Vec<Vec<u8>> {
        ["A", "B", "C", "D"]
            .iter()
            .map(|n| der_of(&Ca::generate(n, 1).unwrap().cert_pem()))
            .collect()
    }

    fn pem_of(cas: &[Vec<u8>], which: &[usize]) -> Vec<u8> {
        which
            .iter()
            .map(|&i| to_pem(&cas[i]))
            .collect::<String>()
            .into_bytes()
    }

    /// The configuration as the API server returns it, as JSON (the patch applies to that).
    fn as_json(held: &Held) -> Value {
        let webhooks: Vec<Value> = held
            .webhooks
            .iter()
            .map(|w| {
                let mut client_config = serde_json::json!({});
                if let Some(b) = &w.ca_bundle {
                    client_config["caBundle"] =
                        Value::String(base64::engine::general_purpose::STANDARD.encode(b));
                }
                serde_json::json!({"name": w.name, "clientConfig": client_config})
            })
            .collect();
        let mut metadata = serde_json::json!({"resourceVersion": held.resource_version});
        if let Some(a) = &held.annotations {
            metadata["annotations"] = serde_json::to_value(a).unwrap();
        }
        serde_json::json!({"metadata": metadata, "webhooks": webhooks})
    }

    /// Applies the patch as the API server would; `None` if a `test` fails.
    fn apply(held: &Held, patch: &json_patch::Patch) -> Option<Value> {
        let mut doc = as_json(held);
        json_patch::patch(&mut doc, patch).ok()?;
        Some(doc)
    }

    /// The CAs (indices into `cas`) of each webhook's caBundle in a patched document.
    fn bundles_in(doc: &Value, cas: &[Vec<u8>]) -> Vec<Vec<usize>> {
        doc["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                let b64 = w["clientConfig"]["caBundle"].as_str().unwrap_or_default();
                let pem = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap();
                pem_ders(&pem)
                    .iter()
                    .map(|d| cas.iter().position(|c| c == d.as_ref()).unwrap())
                    .collect()
            })
            .collect()
    }

    struct Case {
        name: &'static str,
        /// Annotations before (`None`: the object has none).
        annotations: Option<Vec<(&'static str, String)>>,
        /// Each webhook's caBundle before, as indices of [`cas`] (`None`: no caBundle).
        bundles: Vec<Option<Vec<usize>>>,
        lead: Option<usize>,
        mine: Vec<usize>,
        /// The annotations after, exactly.
        want_annotations: Vec<(&'static str, String)>,
        want_bundles: Vec<Vec<usize>>,
        want_added_mine: bool,
        want_changed: bool,
    }

    /// The protocol, case by case: each patch is applied to the configuration it was planned
    /// for, and the result compared whole.
    #[test]
    fn the_plan_brings_the_configuration_to_what_the_replicas_need() {
        let cas = cas();
        let fp = |i: usize| fingerprint(&cas[i]).unwrap();
        let fps = |is: &[usize]| is.iter().map(|&i| fp(i)).collect::<Vec<_>>().join(",");
        let rec = |t: i64, is: &[usize]| format!("{t} {}", fps(is));
        let claimed = |is: &[usize]| (CLAIMED_KEY, fps(is));
        let cases = vec![
            Case {
                name: "first record on an empty configuration",
                annotations: None,
                bundles: vec![None],
                lead: Some(0),
                mine: vec![0],
                want_annotations: vec![(R1, rec(NOW, &[0])), claimed(&[0])],
                want_bundles: vec![vec![0]],
                want_added_mine: true,
                want_changed: true,
            },
            Case {
                name: "a peer's fresh record and its CA are kept",
                annotations: Some(vec![(R2, rec(NOW - STALE_AFTER, &[1])), claimed(&[1])]),
                bundles: vec![Some(vec![1])],
                lead: Some(0),
                mine: vec![0],
                want_annotations: vec![
                    (R1, rec(NOW, &[0])),
                    (R2, rec(NOW - STALE_AFTER, &[1])),
                    claimed(&[1, 0]),
                ],
                want_bundles: vec![vec![0, 1]],
                want_added_mine: true,
                want_changed: true,
            },
            Case {
                name: "a stale record is removed and its CA leaves the caBundle",
                annotations: Some(vec![
                    (R1, rec(NOW - 10, &[0])),
                    (R2, rec(NOW - STALE_AFTER - 1, &[1])),
                    claimed(&[0, 1]),
                ]),
                bundles: vec![Some(vec![0, 1])],
                lead: Some(0),
                mine: vec![0],
                want_annotations: vec![(R1, rec(NOW, &[0])), claimed(&[0, 1])],
                want_bundles: vec![vec![0]],
                want_added_mine: false,
                want_changed: true,
            },
            Case {
                name: "a record that does not parse is stale",
                annotations: Some(vec![(R2, "soon ".to_owned() + &fp(1)), claimed(&[0])]),
                bundles: vec![Some(vec![0, 1])],
                lead: Some(0),
                mine: vec![0],
                want_annotations: vec![(R1, rec(NOW, &[0])), claimed(&[0, 1])],
                want_bundles: vec![vec![0]],
                want_added_mine: false,
                want_changed: true,
            },
            Case {
                name: "this replica's own old record is rewritten, not removed",
                annotations: Some(vec![(R1, rec(NOW - 1000, &[0])), claimed(&[0])]),
                bundles: vec![Some(vec![0])],
                lead: Some(0),
                mine: vec![0],
                want_annotations: vec![(R1, rec(NOW, &[0])), claimed(&[0])],
                want_bundles: vec![vec![0]],
                want_added_mine: false,
                want_changed: false,
            },
            Case {
                name: "a CA no replica recorded is kept, first seen now",
                annotations: Some(vec![]),
                bundles: vec![Some(vec![2])],
                lead: Some(0),
                mine: vec![0],
                want_annotations: vec![
                    (R1, rec(NOW, &[0])),
                    claimed(&[0]),
                    (PREVIOUS_KEY, format!("{}={NOW}", fp(2))),
                ],
                want_bundles: vec![vec![0, 2]],
                want_added_mine: true,
                want_changed: true,
            },
            Case {
                name: "an unrecorded CA is still kept at ten minutes",
                annotations: Some(vec![
                    (R1, rec(NOW - 10, &[0])),
                    claimed(&[0]),
                    (PREVIOUS_KEY, format!("{}={}", fp(2), NOW - 600)),
                ]),
                bundles: vec![Some(vec![0, 2])],
                lead: Some(0),
                mine: vec![0],
                want_annotations: vec![
                    (R1, rec(NOW, &[0])),
                    claimed(&[0]),
                    (PREVIOUS_KEY, format!("{}={}", fp(2), NOW - 600)),
                ],
                want_bundles: vec![vec![0, 2]],
                want_added_mine: false,
                want_changed: false,
            },
            Case {
                name: "an unrecorded CA goes after ten minutes, and its note with it",
                annotations: Some(vec![
                    (R1, rec(NOW - 10, &[0])),
                    claimed(&[0]),
                    (PREVIOUS_KEY, format!("{}={}", fp(2), NOW - 601)),
                ]),
                bundles: vec![Some(vec![0, 2])],
                lead: Some(0),
                mine: vec![0],
                want_annotations: vec![(R1, rec(NOW, &[0])), claimed(&[0])],
                want_bundles: vec![vec![0]],
                want_added_mine: false,
                want_changed: true,
            },
            Case {
                name: "a CA once recorded and needed by nobody goes at once",
                annotations: Some(vec![(R1, rec(NOW - 10, &[0])), claimed(&[1, 0])]),
                bundles: vec![Some(vec![0, 1])],
                lead: Some(0),
                mine: vec![0],
                want_annotations: vec![(R1, rec(NOW, &[0])), claimed(&[1, 0])],
                want_bundles: vec![vec![0]],
                want_added_mine: false,
                want_changed: true,
            },
            Case {
                name: "switching: the next CA leads, the served one stays",
                annotations: Some(vec![(R1, rec(NOW - 10, &[0])), claimed(&[0])]),
                bundles: vec![Some(vec![0])],
                lead: Some(1),
                mine: vec![0, 1],
                want_annotations: vec![(R1, rec(NOW, &[0, 1])), claimed(&[0, 1])],
                want_bundles: vec![vec![1, 0]],
                want_added_mine: true,
                want_changed: true,
            },
            Case {
                name: "without the lead CA only the record is refreshed",
                annotations: Some(vec![
                    (R2, rec(NOW - STALE_AFTER - 1, &[1])),
                    claimed(&[1]),
                    (PREVIOUS_KEY, format!("{}={}", fp(2), NOW - 601)),
                ]),
                bundles: vec![Some(vec![1, 2, 3])],
                lead: None,
                mine: vec![0],
                want_annotations: vec![
                    (R1, rec(NOW, &[0])),
                    claimed(&[1]),
                    (PREVIOUS_KEY, format!("{}={}", fp(2), NOW - 601)),
                ],
                want_bundles: vec![vec![1, 2, 3]],
                want_added_mine: false,
                want_changed: false,
            },
            Case {
                name: "every webhook of the configuration gets the caBundle",
                annotations: Some(vec![]),
                bundles: vec![None, Some(vec![0])],
                lead: Some(0),
                mine: vec![0],
                want_annotations: vec![(R1, rec(NOW, &[0])), claimed(&[0])],
                want_bundles: vec![vec![0], vec![0]],
                want_added_mine: true,
                want_changed: true,
            },
        ];
        for case in cases {
            let held = Held {
                resource_version: "42".to_owned(),
                annotations: case.annotations.map(|a| {
                    a.into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<BTreeMap<_, _>>()
                }),
                webhooks: case
                    .bundles
                    .iter()
                    .enumerate()
                    .map(|(i, b)| HeldWebhook {
                        name: format!("w{i}.migrations.io"),
                        ca_bundle: b.as_ref().map(|b| pem_of(&cas, b)),
                    })
                    .collect(),
            };
            let mine: Vec<Vec<u8>> = case.mine.iter().map(|&i| cas[i].clone()).collect();
            let needs = Needs {
                replica: "r1",
                lead_ca: case.lead.map(|i| cas[i].as_slice()),
                mine: &mine,
                stale_after: STALE_AFTER,
            };
            let plan = plan(&held, &needs, NOW);
            let name = case.name;
            let doc = apply(&held, &plan.patch)
                .unwrap_or_else(|| panic!("{name}: the patch does not apply"));
            let annotations: BTreeMap<String, String> =
                serde_json::from_value(doc["metadata"]["annotations"].clone()).unwrap();
            let want: BTreeMap<String, String> = case
                .want_annotations
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            assert_eq!(annotations, want, "{name}: annotations");
            assert_eq!(
                bundles_in(&doc, &cas),
                case.want_bundles,
                "{name}: caBundles"
            );
            let first: Vec<usize> = plan
                .bundle
                .iter()
                .map(|d| cas.iter().position(|c| c == d.as_ref()).unwrap())
                .collect();
            assert_eq!(first, case.want_bundles[0], "{name}: the returned caBundle");
            assert_eq!(plan.added_mine, case.want_added_mine, "{name}: added_mine");
            assert_eq!(plan.bundle_changed, case.want_changed, "{name}: changed");
        }
    }

    /// The patch fails as a whole when the configuration changed since it was read: the
    /// resourceVersion, and each rewritten webhook's name, are tested first.
    #[test]
    fn the_patch_only_applies_to_the_configuration_it_was_planned_for() {
        let cas = cas();
        let held = Held {
            resource_version: "7".to_owned(),
            annotations: None,
            webhooks: vec![HeldWebhook {
                name: "w.migrations.io".to_owned(),
                ca_bundle: None,
            }],
        };
        let mine = vec![cas[0].clone()];
        let needs = Needs {
            replica: "r1",
            lead_ca: Some(&cas[0]),
            mine: &mine,
            stale_after: STALE_AFTER,
        };
        let plan = plan(&held, &needs, NOW);
        let ops = serde_json::to_value(&plan.patch).unwrap();
        assert_eq!(
            ops[0],
            serde_json::json!({"op": "test", "path": "/metadata/resourceVersion", "value": "7"})
        );
        assert_eq!(
            ops[1],
            serde_json::json!({"op": "add", "path": "/metadata/annotations", "value": {}})
        );
        assert!(
            ops.as_array().unwrap().contains(
                &serde_json::json!({"op": "test", "path": "/webhooks/0/name", "value": "w.migrations.io"})
            ),
            "{ops}"
        );
        assert!(apply(&held, &plan.patch).is_some());
        let newer = Held {
            resource_version: "8".to_owned(),
            ..held.clone()
        };
        assert!(
            apply(&newer, &plan.patch).is_none(),
            "a newer resourceVersion"
        );
        let renamed = Held {
            webhooks: vec![HeldWebhook {
                name: "other.migrations.io".to_owned(),
                ca_bundle: None,
            }],
            ..held
        };
        assert!(
            apply(&renamed, &plan.patch).is_none(),
            "another webhook at index 0"
        );
    }

    #[test]
    fn the_claimed_list_keeps_the_most_recent() {
        let cas = cas();
        let old: Vec<String> = (0..MAX_CLAIMED).map(|i| format!("{i:032x}")).collect();
        let held = Held {
            annotations: Some(BTreeMap::from([(CLAIMED_KEY.to_owned(), old.join(","))])),
            webhooks: vec![HeldWebhook::default()],
            ..Held::default()
        };
        let mine = vec![cas[0].clone()];
        let needs = Needs {
            replica: "r1",
            lead_ca: Some(&cas[0]),
            mine: &mine,
            stale_after: STALE_AFTER,
        };
        let doc = apply(&held, &plan(&held, &needs, NOW).patch).unwrap();
        let claimed = doc["metadata"]["annotations"][CLAIMED_KEY]
            .as_str()
            .unwrap();
        let list: Vec<&str> = claimed.split(',').collect();
        assert_eq!(list.len(), MAX_CLAIMED);
        assert_eq!(list[0], old[1], "the oldest is dropped");
        assert_eq!(list[MAX_CLAIMED - 1], fingerprint(&cas[0]).unwrap());
    }
}
