//! Helpers shared by the integration tests.
#![allow(dead_code)]

use migration_injector::mutate::workload::WorkloadKind;
use migration_injector::mutate::InjectorConfig;
use migration_injector::mutate::{mutate, MutationError};
use serde_json::Value;

/// Runs the mutation on `object` and applies the patch: the object the API server would store.
pub fn apply(
    kind: WorkloadKind,
    object: &Value,
    config: &InjectorConfig,
    update: bool,
) -> Result<(Value, Vec<String>, usize), MutationError> {
    let m = mutate(kind, &object.to_string(), config, update)?;
    let mut out = object.clone();
    json_patch::patch(&mut out, &m.patch)
        .unwrap_or_else(|e| panic!("patch {:?} does not apply: {e}", m.patch));
    Ok((out, m.warnings, m.patch.0.len()))
}

pub fn create(kind: WorkloadKind, object: &Value) -> Value {
    apply(kind, object, &InjectorConfig::default(), false)
        .unwrap()
        .0
}

pub fn deny(kind: WorkloadKind, object: &Value) -> String {
    match apply(kind, object, &InjectorConfig::default(), false) {
        Err(MutationError::Denied(d)) => d.to_string(),
        other => panic!("expected a denial, got {other:?}"),
    }
}
pub mod server;

/// Removes `migrations.io/image` from the object's own annotations: the user opting out.
pub fn remove_image(object: &mut Value) {
    if let Some(a) = object["metadata"]["annotations"].as_object_mut() {
        a.remove("migrations.io/image");
    }
}

/// Asserts that one of the warnings mentions `needle`.
pub fn assert_warned(warnings: &[String], needle: &str) {
    assert!(
        warnings.iter().any(|w| w.contains(needle)),
        "no warning mentions {needle:?}: {warnings:?}"
    );
}
