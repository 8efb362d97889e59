//! The `MigrationRun` custom resource (`migrations.io/v1alpha1`): one run of one migration
//! (named by its fingerprint) in one namespace, shared by every workload whose pods wait for it.

use kube::CustomResource;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The label the webhook puts on waiting pods (value: the fingerprint).
pub const FINGERPRINT_LABEL: &str = "migrations.io/fingerprint";
/// The label on the controller's Jobs and their pods (value: the fingerprint).
pub const RUN_LABEL: &str = "migrations.io/run";
/// The run's phase, written on each waiting pod for the waiter to read.
pub const PHASE_ANNOTATION: &str = "migrations.io/run-phase";
/// One line for humans next to the phase.
pub const MESSAGE_ANNOTATION: &str = "migrations.io/run-message";
/// A new value on a MigrationRun restarts it when it failed.
pub const RETRY_ANNOTATION: &str = "migrations.io/retry";
/// The waiter's env var holding `{"container": ..., "volume": ...}`.
pub const RUN_ENV: &str = "MIGRATION_INJECTOR_RUN";
/// The waiter's env var holding the fingerprint.
pub const FINGERPRINT_ENV: &str = "MIGRATION_INJECTOR_FINGERPRINT";

// The printcolumns' `type_ = ...` repeat by design; clippy reads them as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "migrations.io",
    version = "v1alpha1",
    kind = "MigrationRun",
    plural = "migrationruns",
    shortname = "mrun",
    namespaced,
    status = "MigrationRunStatus",
    printcolumn(name = "Workload", type_ = "string", json_path = ".spec.workloads[0]"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Attempts", type_ = "integer", json_path = ".status.attempts"),
    printcolumn(name = "Started", type_ = "date", json_path = ".status.startedAt"),
    printcolumn(name = "Finished", type_ = "date", json_path = ".status.finishedAt"),
    printcolumn(name = "Message", type_ = "string", json_path = ".status.message"),
    printcolumn(
        name = "Fingerprint",
        type_ = "string",
        json_path = ".spec.fingerprint",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MigrationRunSpec {
    /// 40 hex chars: what the webhook hashed (image, command, args, env, Secret volume).
    pub fingerprint: String,
    /// The migration container's image (also in `container`), for humans.
    pub image: String,
    /// The migration container, as every-pod mode would inject it.
    #[schemars(schema_with = "object")]
    pub container: Map<String, Value>,
    /// Its Secret volume, if it reads one.
    #[schemars(schema_with = "nullable_object")]
    #[serde(default)]
    pub volume: Option<Map<String, Value>>,
    /// The pod-level settings copied from the first waiting pod (service account, pull secrets,
    /// placement, security context, DNS), applied to the Jobs' pods.
    #[schemars(schema_with = "object")]
    #[serde(default)]
    pub pod: Map<String, Value>,
    /// `Kind/name` of every workload waiting for this run.
    #[serde(default)]
    pub workloads: Vec<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Phase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }
}

/// Every field is written (`null` when unset) so a merge patch of the whole status clears what
/// the previous state set.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationRunStatus {
    #[serde(default)]
    pub phase: Phase,
    /// Attempts started (reset by a manual retry).
    #[serde(default)]
    pub attempts: u32,
    /// The Job of the current or last attempt.
    #[serde(default)]
    pub job: Option<String>,
    /// When the current or last attempt started (RFC 3339).
    #[serde(default)]
    pub started_at: Option<String>,
    /// When the run succeeded or finally failed (RFC 3339).
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// When the next attempt may start, after a failed one (RFC 3339).
    #[serde(default)]
    pub next_attempt_at: Option<String>,
    /// The last `migrations.io/retry` annotation value acted on.
    #[serde(default)]
    pub observed_retry: Option<String>,
}

// Free-form Kubernetes objects: the API server keeps their fields as given.
fn object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

fn nullable_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// The CRD manifest, as YAML (what `docs crd` prints and the chart ships).
pub fn crd_yaml() -> Result<String, serde_yaml_ng::Error> {
    use kube::CustomResourceExt;
    serde_yaml_ng::to_string(&MigrationRun::crd())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_crd_is_namespaced_with_a_status_subresource_and_preserved_objects() {
        let yaml = crd_yaml().unwrap();
        let crd: Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(crd["metadata"]["name"], "migrationruns.migrations.io");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["mrun"]));
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert_eq!(version["subresources"]["status"], json!({}));
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        assert_eq!(
            spec["container"]["x-kubernetes-preserve-unknown-fields"],
            true
        );
        assert_eq!(spec["volume"]["nullable"], true);
        let columns: Vec<_> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            columns,
            [
                "Workload",
                "Phase",
                "Attempts",
                "Started",
                "Finished",
                "Message",
                "Fingerprint",
                "Age"
            ]
        );
    }

    #[test]
    fn an_empty_status_reads_as_pending() {
        let status: MigrationRunStatus = serde_json::from_value(json!({})).unwrap();
        assert_eq!(status.phase, Phase::Pending);
        // Unset fields are written as null, which a merge patch turns into removals.
        let written = serde_json::to_value(&status).unwrap();
        assert_eq!(written["nextAttemptAt"], Value::Null);
        assert!(written.as_object().unwrap().contains_key("nextAttemptAt"));
    }
}
