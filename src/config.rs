//! Cluster-wide injection defaults: the `serve`/`inject` flags (each with an env-var fallback,
//! which is how the Helm chart sets them) and their validated form.

use serde_json::{json, Map, Value};

use crate::annotations::Key;
use crate::injection::{self, Position, PullPolicy};

/// Errors in the injector's own configuration, reported at start-up.
#[derive(Debug, thiserror::Error)]
#[error("flag --{flag} (env {env}) = {value:?} {problem}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub env: &'static str,
    pub value: String,
    pub problem: String,
}

/// Validated defaults for what is injected. Annotations on a workload override each of them.
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
    /// The injected container's securityContext; `None` injects none.
    pub security_context: Option<Map<String, Value>>,
    /// Image reference prefixes allowed in `migrations.io/image`; empty allows any.
    pub allowed_image_prefixes: Vec<String>,
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
            secret: "atlas-project".into(),
            volume_name: "atlas-project".into(),
            env: "k8s".into(),
            mount_path: "/etc/atlas".into(),
            config_file: "atlas.hcl".into(),
            args: None,
            command: None,
            pull_policy: PullPolicy::Always,
            container_name: "migrate".into(),
            position: Position::Last,
            cpu_request: None,
            cpu_limit: None,
            memory_request: None,
            memory_limit: None,
            security_context: Some(restricted_security_context()),
            allowed_image_prefixes: Vec::new(),
        }
    }
}

const DEFAULT_SECURITY_CONTEXT: &str = r#"{"allowPrivilegeEscalation":false,"capabilities":{"drop":["ALL"]},"readOnlyRootFilesystem":true,"runAsNonRoot":true,"seccompProfile":{"type":"RuntimeDefault"}}"#;

/// Injection defaults as flags, shared by `serve` and `inject`.
#[derive(Debug, Clone, clap::Args)]
pub struct InjectionArgs {
    /// Secret holding the migration tool's config (migrations.io/secret).
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_DEFAULT_SECRET",
        default_value = "atlas-project"
    )]
    pub default_secret: String,
    /// Name of the injected volume (migrations.io/volume-name).
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_DEFAULT_VOLUME_NAME",
        default_value = "atlas-project"
    )]
    pub default_volume_name: String,
    /// Atlas environment passed as --env (migrations.io/env).
    #[arg(long, env = "MIGRATION_INJECTOR_DEFAULT_ENV", default_value = "k8s")]
    pub default_env: String,
    /// Where the Secret is mounted (migrations.io/mount-path).
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_DEFAULT_MOUNT_PATH",
        default_value = "/etc/atlas"
    )]
    pub default_mount_path: String,
    /// Config file inside the mount (migrations.io/config-file).
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_DEFAULT_CONFIG_FILE",
        default_value = "atlas.hcl"
    )]
    pub default_config_file: String,
    /// JSON array replacing the default Atlas args (migrations.io/args).
    #[arg(long, env = "MIGRATION_INJECTOR_DEFAULT_ARGS")]
    pub default_args: Option<String>,
    /// JSON array set as the container command (migrations.io/command).
    #[arg(long, env = "MIGRATION_INJECTOR_DEFAULT_COMMAND")]
    pub default_command: Option<String>,
    /// imagePullPolicy of the injected container (migrations.io/pull-policy).
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_DEFAULT_PULL_POLICY",
        default_value = "Always"
    )]
    pub default_pull_policy: String,
    /// Name of the injected init container (migrations.io/container-name).
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_DEFAULT_CONTAINER_NAME",
        default_value = "migrate"
    )]
    pub default_container_name: String,
    /// `first` or `last` among existing init containers (migrations.io/position).
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_DEFAULT_POSITION",
        default_value = "last"
    )]
    pub default_position: String,
    /// CPU request of the injected container (migrations.io/cpu-request).
    #[arg(long, env = "MIGRATION_INJECTOR_DEFAULT_CPU_REQUEST")]
    pub default_cpu_request: Option<String>,
    /// CPU limit of the injected container (migrations.io/cpu-limit).
    #[arg(long, env = "MIGRATION_INJECTOR_DEFAULT_CPU_LIMIT")]
    pub default_cpu_limit: Option<String>,
    /// Memory request of the injected container (migrations.io/memory-request).
    #[arg(long, env = "MIGRATION_INJECTOR_DEFAULT_MEMORY_REQUEST")]
    pub default_memory_request: Option<String>,
    /// Memory limit of the injected container (migrations.io/memory-limit).
    #[arg(long, env = "MIGRATION_INJECTOR_DEFAULT_MEMORY_LIMIT")]
    pub default_memory_limit: Option<String>,
    /// JSON object used as the injected container's securityContext; `{}` injects none.
    #[arg(long, env = "MIGRATION_INJECTOR_SECURITY_CONTEXT", default_value = DEFAULT_SECURITY_CONTEXT)]
    pub security_context: String,
    /// Comma-separated image prefixes allowed in migrations.io/image (empty: any image).
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_ALLOWED_IMAGE_PREFIXES",
        value_delimiter = ','
    )]
    pub allowed_image_prefixes: Vec<String>,
}

impl InjectionArgs {
    /// Validates every default with the same rules as the annotation it stands for, so a bad
    /// flag fails at start-up instead of on every admission.
    pub fn into_config(self) -> Result<InjectorConfig, ConfigError> {
        fn check<T>(
            flag: &'static str,
            env: &'static str,
            key: Key,
            value: &str,
            parse: impl Fn(Key, &str) -> Result<T, crate::denial::Denial>,
        ) -> Result<T, ConfigError> {
            parse(key, value).map_err(|d| ConfigError {
                flag,
                env,
                value: value.to_owned(),
                problem: match d {
                    crate::denial::Denial::InvalidAnnotation { problem, .. } => problem,
                    other => other.to_string(),
                },
            })
        }
        macro_rules! flag {
            ($flag:literal, $env:literal, $key:expr, $value:expr, $parse:expr) => {
                check($flag, $env, $key, $value, $parse)?
            };
        }
        let text = |k: Key, v: &str| injection::parse_text(k, v).map(str::to_owned);
        let opt_quantity =
            |flag, env, key, v: &Option<String>| -> Result<Option<String>, ConfigError> {
                match v.as_deref().filter(|s| !s.is_empty()) {
                    Some(s) => check(flag, env, key, s, injection::parse_quantity)
                        .map(|_| Some(s.to_owned())),
                    None => Ok(None),
                }
            };
        let opt_list =
            |flag, env, key, v: &Option<String>| -> Result<Option<Vec<String>>, ConfigError> {
                match v.as_deref().filter(|s| !s.is_empty()) {
                    Some(s) => check(flag, env, key, s, injection::parse_string_list).map(Some),
                    None => Ok(None),
                }
            };
        let security_context = match serde_json::from_str::<Value>(&self.security_context) {
            Ok(Value::Object(map)) if map.is_empty() => None,
            Ok(Value::Null) => None,
            Ok(Value::Object(map)) => Some(map),
            _ => {
                return Err(ConfigError {
                    flag: "security-context",
                    env: "MIGRATION_INJECTOR_SECURITY_CONTEXT",
                    value: self.security_context,
                    problem: "is not a JSON object (a container securityContext)".into(),
                })
            }
        };
        Ok(InjectorConfig {
            secret: flag!(
                "default-secret",
                "MIGRATION_INJECTOR_DEFAULT_SECRET",
                Key::Secret,
                &self.default_secret,
                text
            ),
            volume_name: flag!(
                "default-volume-name",
                "MIGRATION_INJECTOR_DEFAULT_VOLUME_NAME",
                Key::VolumeName,
                &self.default_volume_name,
                text
            ),
            env: flag!(
                "default-env",
                "MIGRATION_INJECTOR_DEFAULT_ENV",
                Key::Env,
                &self.default_env,
                text
            ),
            mount_path: flag!(
                "default-mount-path",
                "MIGRATION_INJECTOR_DEFAULT_MOUNT_PATH",
                Key::MountPath,
                &self.default_mount_path,
                text
            ),
            config_file: flag!(
                "default-config-file",
                "MIGRATION_INJECTOR_DEFAULT_CONFIG_FILE",
                Key::ConfigFile,
                &self.default_config_file,
                text
            ),
            args: opt_list(
                "default-args",
                "MIGRATION_INJECTOR_DEFAULT_ARGS",
                Key::Args,
                &self.default_args,
            )?,
            command: opt_list(
                "default-command",
                "MIGRATION_INJECTOR_DEFAULT_COMMAND",
                Key::Command,
                &self.default_command,
            )?,
            pull_policy: flag!(
                "default-pull-policy",
                "MIGRATION_INJECTOR_DEFAULT_PULL_POLICY",
                Key::PullPolicy,
                &self.default_pull_policy,
                injection::parse_pull_policy
            ),
            container_name: flag!(
                "default-container-name",
                "MIGRATION_INJECTOR_DEFAULT_CONTAINER_NAME",
                Key::ContainerName,
                &self.default_container_name,
                text
            ),
            position: flag!(
                "default-position",
                "MIGRATION_INJECTOR_DEFAULT_POSITION",
                Key::Position,
                &self.default_position,
                injection::parse_position
            ),
            cpu_request: opt_quantity(
                "default-cpu-request",
                "MIGRATION_INJECTOR_DEFAULT_CPU_REQUEST",
                Key::CpuRequest,
                &self.default_cpu_request,
            )?,
            cpu_limit: opt_quantity(
                "default-cpu-limit",
                "MIGRATION_INJECTOR_DEFAULT_CPU_LIMIT",
                Key::CpuLimit,
                &self.default_cpu_limit,
            )?,
            memory_request: opt_quantity(
                "default-memory-request",
                "MIGRATION_INJECTOR_DEFAULT_MEMORY_REQUEST",
                Key::MemoryRequest,
                &self.default_memory_request,
            )?,
            memory_limit: opt_quantity(
                "default-memory-limit",
                "MIGRATION_INJECTOR_DEFAULT_MEMORY_LIMIT",
                Key::MemoryLimit,
                &self.default_memory_limit,
            )?,
            security_context,
            allowed_image_prefixes: self
                .allowed_image_prefixes
                .into_iter()
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: InjectionArgs,
    }

    fn parse(flags: &[&str]) -> InjectionArgs {
        Wrapper::try_parse_from(std::iter::once("x").chain(flags.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn flag_defaults_equal_the_guide() {
        assert_eq!(parse(&[]).into_config().unwrap(), InjectorConfig::default());
    }

    #[test]
    fn bad_flags_name_flag_and_env() {
        let args = parse(&["--default-pull-policy", r#"Sometimes"#]);
        let err = args.into_config().unwrap_err().to_string();
        assert!(
            err.contains("--default-pull-policy")
                && err.contains("MIGRATION_INJECTOR_DEFAULT_PULL_POLICY"),
            "{err}"
        );
        let args = parse(&["--security-context", r#"[1]"#]);
        assert!(args.into_config().is_err());
        let args = parse(&["--security-context", r#"{}"#]);
        assert_eq!(args.into_config().unwrap().security_context, None);
        let args = parse(&["--default-memory-limit", "lots"]);
        assert!(args.into_config().is_err());
    }
}
