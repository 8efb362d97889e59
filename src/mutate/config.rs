//! The cluster-wide defaults for what is injected, validated. Annotations on a workload override
//! each of them. The CLI fills this from flags (`cli::injection_args`); the defaults below are
//! the only place each default value is written.

use serde_json::{json, Map, Value};

/// Image pull policy of the injected container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub const fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Where the injected init container goes among the user's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Before every existing init container.
    First,
    /// After every existing init container (a wait-for-db, say).
    Last,
}

impl Position {
    pub const fn as_str(self) -> &'static str {
        match self {
            Position::First => "first",
            Position::Last => "last",
        }
    }
}

/// How often a workload's migration runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// In every pod, before the app (the guide's workflow; the tool's lock serialises them).
    EveryPod,
    /// Once per revision (fingerprint), run by the controller; pods wait for it.
    Once,
}

impl RunMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            RunMode::EveryPod => "every-pod",
            RunMode::Once => "once",
        }
    }
}

/// What the Atlas guide adds by hand: the defaults of every flag and annotation.
pub mod defaults {
    use super::{Position, PullPolicy};

    pub const SECRET: &str = "atlas-project";
    pub const VOLUME_NAME: &str = "atlas-project";
    pub const ENV: &str = "k8s";
    pub const MOUNT_PATH: &str = "/etc/atlas";
    pub const CONFIG_FILE: &str = "atlas.hcl";
    pub const PULL_POLICY: PullPolicy = PullPolicy::Always;
    pub const CONTAINER_NAME: &str = "migrate";
    pub const POSITION: Position = Position::Last;
    pub const RUN_MODE: super::RunMode = super::RunMode::EveryPod;
    /// Atlas's convention for the migrations directory inside a migrations image.
    pub const DIR: &str = "file:///migrations";
    /// The env var the database URL is given in with `migrations.io/url-secret` (also what
    /// dbmate and others read).
    pub const URL_ENV: &str = "DATABASE_URL";
}

/// Validated defaults for what is injected.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectorConfig {
    pub secret: String,
    pub volume_name: String,
    pub env: String,
    pub mount_path: String,
    pub config_file: String,
    pub args: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub pull_policy: PullPolicy,
    pub container_name: String,
    pub position: Position,
    pub cpu_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_request: Option<String>,
    pub memory_limit: Option<String>,
    /// Atlas `--lock-timeout` appended to the default args; `None` keeps the guide's args.
    pub lock_timeout: Option<String>,
    /// The migrations directory for the default args with `migrations.io/url-secret`.
    pub dir: String,
    /// The injected container's securityContext; `None` injects none.
    pub security_context: Option<Map<String, Value>>,
    /// Image reference prefixes allowed in `migrations.io/image`; empty allows any.
    pub allowed_image_prefixes: Vec<String>,
    /// The default of `migrations.io/run`.
    pub run_mode: RunMode,
    /// The image of the waiting init container (migration-injector's own); `None`: run-once
    /// mode is not available on this cluster (no controller), and asking for it is refused.
    pub waiter_image: Option<String>,
}

/// Pod Security "restricted" for the injected container.
pub fn restricted_security_context() -> Map<String, Value> {
    let Value::Object(map) = json!({
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "seccompProfile": {"type": "RuntimeDefault"},
    }) else {
        return Map::new();
    };
    map
}

impl Default for InjectorConfig {
    /// What the Atlas guide adds by hand, hardened.
    fn default() -> Self {
        InjectorConfig {
            secret: defaults::SECRET.into(),
            volume_name: defaults::VOLUME_NAME.into(),
            env: defaults::ENV.into(),
            mount_path: defaults::MOUNT_PATH.into(),
            config_file: defaults::CONFIG_FILE.into(),
            args: None,
            command: None,
            pull_policy: defaults::PULL_POLICY,
            container_name: defaults::CONTAINER_NAME.into(),
            position: defaults::POSITION,
            cpu_request: None,
            cpu_limit: None,
            memory_request: None,
            memory_limit: None,
            lock_timeout: None,
            dir: defaults::DIR.into(),
            security_context: Some(restricted_security_context()),
            allowed_image_prefixes: Vec::new(),
            run_mode: defaults::RUN_MODE,
            waiter_image: None,
        }
    }
}
