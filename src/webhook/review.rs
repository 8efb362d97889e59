//! AdmissionReview in and out. Decodes only the request fields the injector needs (the object
//! stays raw until the mutation reads its few parts) and answers with kube-core's
//! `AdmissionResponse`, written with the patch in base64 as the API documents.

use std::borrow::Cow;

use base64::Engine as _;
use kube::core::admission::{AdmissionResponse, Operation, META_API_VERSION_V1, META_KIND};
use kube::core::Status;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::runs::RunLookup;
use crate::mutate::denial::Denial;
use crate::mutate::once;
use crate::mutate::workload::{ObjectView, WorkloadKind};
use crate::mutate::{error_chain, mutate, mutate_view, InjectorConfig, Mutation, MutationError};

/// The review, with the object decoded as `O`: first as an [`ObjectView`] in the same pass
/// (the fast path), and only if that fails as raw JSON, to tell a broken object of a handled
/// kind (an error) from any object of another kind (allowed).
#[derive(Deserialize)]
#[serde(bound(deserialize = "O: Deserialize<'de>"))]
struct ReviewIn<'a, O> {
    #[serde(rename = "apiVersion", borrow, default)]
    api_version: Option<Cow<'a, str>>,
    #[serde(default = "Option::default")]
    request: Option<RequestIn<'a, O>>,
}

#[derive(Deserialize)]
struct GvkIn<'a> {
    #[serde(borrow, default)]
    group: Cow<'a, str>,
    #[serde(borrow, default)]
    version: Cow<'a, str>,
    #[serde(borrow, default)]
    kind: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(bound(deserialize = "O: Deserialize<'de>"))]
struct RequestIn<'a, O> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
    #[serde(borrow)]
    kind: GvkIn<'a>,
    #[serde(rename = "subResource", borrow, default)]
    sub_resource: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    namespace: Option<Cow<'a, str>>,
    operation: Operation,
    #[serde(default = "Option::default")]
    object: Option<O>,
}

/// Just enough to answer a request whose other fields are broken.
#[derive(Deserialize)]
struct UidOnly<'a> {
    #[serde(borrow)]
    request: UidRequest<'a>,
}

#[derive(Deserialize)]
struct UidRequest<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
}

/// How a review ended, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Not a kind, operation or subresource the injector handles.
    Skipped,
    /// Allowed without a patch.
    Unchanged,
    Mutated,
    /// Refused, with the denial's reason code (`Denial::reason`).
    Denied(&'static str),
    /// The request could be read only far enough to answer it with a failure.
    Invalid,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Skipped => "skipped",
            Verdict::Unchanged => "unchanged",
            Verdict::Mutated => "mutated",
            Verdict::Denied(_) => "denied",
            Verdict::Invalid => "invalid",
        }
    }

    /// Why a review was denied, for metrics; empty otherwise.
    pub fn reason(self) -> &'static str {
        match self {
            Verdict::Denied(reason) => reason,
            _ => "",
        }
    }
}

/// The answer to one review: the JSON body and what happened.
#[derive(Debug)]
pub struct Reviewed {
    pub body: Vec<u8>,
    pub uid: String,
    pub kind: Option<WorkloadKind>,
    pub operation: Option<Operation>,
    pub verdict: Verdict,
    /// The denial or invalid-request message, when there is one.
    pub message: Option<String>,
}

/// The body is not an AdmissionReview at all: answered with HTTP 400.
#[derive(Debug, thiserror::Error)]
#[error("request body is not an AdmissionReview")]
pub struct NotAReview(#[source] pub serde_json::Error);

fn allowed(uid: &str) -> AdmissionResponse {
    let mut r = AdmissionResponse::invalid("");
    r.uid = uid.to_owned();
    r.allowed = true;
    r.result = Status::success();
    r
}

/// Answers one AdmissionReview body.
pub fn review(body: &[u8], config: &InjectorConfig) -> Result<Reviewed, NotAReview> {
    // One UTF-8 check up front; parsing from &str then skips re-checking every raw value.
    let text = std::str::from_utf8(body).unwrap_or_default();
    let first = match serde_json::from_str::<ReviewIn<'_, ObjectView<'_>>>(text) {
        Ok(parsed) => {
            return Ok(answer(parsed, |kind, object, update, _| {
                mutate_view(kind, &object.into_workload(kind), config, update)
            }))
        }
        Err(e) => e,
    };
    if let Ok(parsed) = serde_json::from_str::<ReviewIn<'_, &RawValue>>(text) {
        return Ok(answer(parsed, |kind, object, update, _| {
            mutate(kind, object.get(), config, update)
        }));
    }
    unreadable(body, first)
}

/// Answers one AdmissionReview body of the pods webhook (run-once mode): a new pod of a
/// revision whose migration has succeeded loses its waiter. Anything else is allowed unchanged.
pub fn review_pod(body: &[u8], runs: &dyn RunLookup) -> Result<Reviewed, NotAReview> {
    let text = std::str::from_utf8(body).unwrap_or_default();
    let first = match serde_json::from_str::<ReviewIn<'_, ObjectView<'_>>>(text) {
        Ok(parsed) => {
            return Ok(answer(parsed, |kind, object, update, namespace| {
                let patch = match (kind, update) {
                    (WorkloadKind::Pod, false) => {
                        once::skip_wait(&object.into_workload(kind), |fp| {
                            runs.succeeded(namespace, fp)
                        })
                    }
                    _ => None,
                };
                Ok(Mutation {
                    patch: patch.unwrap_or_default(),
                    warnings: Vec::new(),
                })
            }))
        }
        Err(e) => e,
    };
    // Not a pod this webhook can read: allowed as it is (the waiter, if any, stays: safe).
    if let Ok(parsed) = serde_json::from_str::<ReviewIn<'_, &RawValue>>(text) {
        return Ok(answer(parsed, |_, _, _, _| Ok(Mutation::default())));
    }
    unreadable(body, first)
}

fn unreadable(body: &[u8], first: serde_json::Error) -> Result<Reviewed, NotAReview> {
    // Answer in-band when the uid is readable, so the API server shows our reason.
    let Ok(uid) = serde_json::from_slice::<UidOnly<'_>>(body) else {
        return Err(NotAReview(match std::str::from_utf8(body) {
            Ok(_) => first,
            Err(_) => serde_json::from_slice::<serde::de::IgnoredAny>(body)
                .err()
                .unwrap_or(first),
        }));
    };
    Ok(invalid(
        META_API_VERSION_V1,
        &uid.request.uid,
        format!("the AdmissionReview request cannot be decoded: {first}"),
    ))
}

fn answer<O>(
    parsed: ReviewIn<'_, O>,
    mutate: impl FnOnce(WorkloadKind, O, bool, &str) -> Result<Mutation, MutationError>,
) -> Reviewed {
    let api_version = parsed.api_version.as_deref().unwrap_or(META_API_VERSION_V1);
    let Some(req) = parsed.request else {
        return invalid(
            api_version,
            "",
            "the AdmissionReview has no request".to_owned(),
        );
    };
    let kind = WorkloadKind::from_gvk(&req.kind.group, &req.kind.version, &req.kind.kind);
    let operation = Some(req.operation.clone());
    let finish =
        |response: AdmissionResponse, verdict: Verdict, message: Option<String>| Reviewed {
            body: encode(api_version, &response),
            uid: response.uid,
            kind,
            operation: operation.clone(),
            verdict,
            message,
        };

    let update = match req.operation {
        Operation::Create => false,
        Operation::Update => true,
        _ => return finish(allowed(&req.uid), Verdict::Skipped, None),
    };
    let (Some(kind), Some(object)) = (kind, req.object) else {
        return finish(allowed(&req.uid), Verdict::Skipped, None);
    };
    // Subresources (scale, status, ephemeralcontainers, ...) carry no pod template to mutate.
    if req.sub_resource.as_deref().is_some_and(|s| !s.is_empty()) {
        return finish(allowed(&req.uid), Verdict::Skipped, None);
    }

    let namespace = req.namespace.as_deref().unwrap_or_default();
    match mutate(kind, object, update, namespace) {
        Ok(m) => {
            let mut response = allowed(&req.uid);
            if !m.warnings.is_empty() {
                response.warnings = Some(m.warnings);
            }
            if m.patch.0.is_empty() {
                return finish(response, Verdict::Unchanged, None);
            }
            match response.with_patch(m.patch) {
                Ok(r) => finish(r, Verdict::Mutated, None),
                Err(e) => {
                    let message = format!("migration-injector could not encode its patch: {e}");
                    let r = allowed(&req.uid).deny(&message);
                    finish(r, Verdict::Invalid, Some(message))
                }
            }
        }
        Err(MutationError::Denied(d)) => {
            let message = d.to_string();
            let code = match d {
                Denial::ImageNotAllowed { .. } => 403,
                _ => 400,
            };
            let mut r = allowed(&req.uid);
            r.allowed = false;
            r.result = Status::failure(&message, d.reason()).with_code(code);
            finish(r, Verdict::Denied(d.reason()), Some(message))
        }
        Err(e @ MutationError::Decode { .. }) => {
            let message = error_chain(&e);
            let mut r = AdmissionResponse::invalid(&message);
            r.uid = req.uid.into_owned();
            r.result.code = 400;
            finish(r, Verdict::Invalid, Some(message))
        }
    }
}

fn invalid(api_version: &str, uid: &str, message: String) -> Reviewed {
    let mut r = AdmissionResponse::invalid(&message);
    r.uid = uid.to_owned();
    r.result.code = 400;
    Reviewed {
        body: encode(api_version, &r),
        uid: r.uid,
        kind: None,
        operation: None,
        verdict: Verdict::Invalid,
        message: Some(message),
    }
}

/// Writes an `AdmissionResponse` as the API server reads it. kube-core's own serialisation
/// writes `patch` as an array of numbers (kube-rs#1781); the API documents base64, which every
/// API server version decodes. The envelope is written directly: it is small and fixed, strings
/// still go through serde_json for escaping, and the base64 patch needs none.
fn encode(api_version: &str, response: &AdmissionResponse) -> Vec<u8> {
    // Echo the request's version (v1 or v1beta1: the response shape is the same).
    let api_version = if api_version.starts_with("admission.k8s.io/") {
        api_version
    } else {
        META_API_VERSION_V1
    };
    let patch_len = response
        .patch
        .as_ref()
        .and_then(|p| base64::encoded_len(p.len(), true))
        .unwrap_or(0);
    let mut out = Vec::with_capacity(160 + response.uid.len() + patch_len);
    // Writing to a Vec cannot fail, so the results of to_writer are ignored.
    out.extend_from_slice(b"{\"apiVersion\":");
    let _ = serde_json::to_writer(&mut out, api_version);
    out.extend_from_slice(b",\"kind\":\"");
    out.extend_from_slice(META_KIND.as_bytes());
    out.extend_from_slice(b"\",\"response\":{\"uid\":");
    let _ = serde_json::to_writer(&mut out, &response.uid);
    if response.allowed {
        out.extend_from_slice(b",\"allowed\":true");
    } else {
        out.extend_from_slice(b",\"allowed\":false,\"status\":");
        let _ = serde_json::to_writer(&mut out, &response.result);
    }
    if let Some(patch) = &response.patch {
        out.extend_from_slice(b",\"patchType\":\"JSONPatch\",\"patch\":\"");
        let start = out.len();
        out.resize(start + patch_len, 0);
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(patch, &mut out[start..])
            .unwrap_or(0);
        out.truncate(start + written);
        out.push(b'"');
    }
    if !response.audit_annotations.is_empty() {
        out.extend_from_slice(b",\"auditAnnotations\":");
        let _ = serde_json::to_writer(&mut out, &response.audit_annotations);
    }
    if let Some(warnings) = &response.warnings {
        out.extend_from_slice(b",\"warnings\":");
        let _ = serde_json::to_writer(&mut out, warnings);
    }
    out.extend_from_slice(b"}}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn encoded_reviews_are_json_with_a_base64_patch() {
        let mut r = allowed("u\"1");
        r.warnings = Some(vec!["w \"quoted\"".into()]);
        let r = r.with_patch(json_patch::Patch(vec![])).unwrap();
        let v: Value = serde_json::from_slice(&encode("admission.k8s.io/v1beta1", &r)).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
                "response": {"uid": "u\"1", "allowed": true, "patchType": "JSONPatch",
                    "patch": "W10=", "warnings": ["w \"quoted\""]}})
        );
        let denied = allowed("2").deny("no");
        let v: Value = serde_json::from_slice(&encode("bogus", &denied)).unwrap();
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(v["response"]["allowed"], false);
        assert_eq!(v["response"]["status"]["message"], "no");
    }
}
