//! The injection defaults as flags, shared by `serve` and `inject`. Each flag is validated by
//! the same rule as the annotation it stands for (clap runs it, so a bad flag fails at start and
//! the error names the flag and its env var); the default values come from
//! `mutate::config::defaults`.

use std::ffi::OsStr;
use std::fmt;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use k8s_openapi::api::core::v1::SecurityContext;
use migration_injector::mutate::annotations::Key;
use migration_injector::mutate::config::{
    defaults, restricted_security_context, InjectorConfig, Position, PullPolicy, RunMode,
};
use migration_injector::mutate::denial::Denial;
use migration_injector::mutate::values;
use serde_json::{Map, Value};

/// Injection defaults as flags.
#[derive(Debug, Clone, clap::Args)]
pub struct InjectionArgs {
    /// Secret holding the migration tool's config (migrations.io/secret).
    #[arg(long, env = "MIGRATION_INJECTOR_DEFAULT_SECRET", default_value = defaults::SECRET, value_parser = text(Key::Secret))]
    pub default_secret: String,
    /// Name of the injected volume (migrations.io/volume-name).
    #[arg(long, env = "MIGRATION_INJECTOR_DEFAULT_VOLUME_NAME", default_value = defaults::VOLUME_NAME, value_parser = text(Key::VolumeName))]
    pub default_volume_name: String,
    /// Atlas environment passed as --env (migrations.io/env).
    #[arg(long, env = "MIGRATION_INJECTOR_DEFAULT_ENV", default_value = defaults::ENV, value_parser = text(Key::Env))]
    pub default_env: String,
    /// Where the Secret is mounted (migrations.io/mount-path).
    #[arg(long, env = "MIGRATION_INJECTOR_DEFAULT_MOUNT_PATH", default_value = defaults::MOUNT_PATH, value_parser = text(Key::MountPath))]
    pub default_mount_path: String,
    /// Config file inside the mount (migrations.io/config-file).
    #[arg(long, env = "MIGRATION_INJECTOR_DEFAULT_CONFIG_FILE", default_value = defaults::CONFIG_FILE, value_parser = text(Key::ConfigFile))]
    pub default_config_file: String,
    /// JSON array replacing the default Atlas args (migrations.io/args).
    #[arg(long, env = "MIGRATION_INJECTOR_DEFAULT_ARGS", value_parser = checked(Key::Args, |k, v| values::parse_string_list(k, v).map(StringList)))]
    pub default_args: Option<StringList>,
    /// JSON array set as the container command (migrations.io/command).
    #[arg(long, env = "MIGRATION_INJECTOR_DEFAULT_COMMAND", value_parser = checked(Key::Command, |k, v| values::parse_string_list(k, v).map(StringList)))]
    pub default_command: Option<StringList>,
    /// imagePullPolicy of the injected container (migrations.io/pull-policy).
    #[arg(long, env = "MIGRATION_INJECTOR_DEFAULT_PULL_POLICY", default_value = defaults::PULL_POLICY.as_str(), value_parser = checked(Key::PullPolicy, values::parse_pull_policy))]
    pub default_pull_policy: PullPolicy,
    /// Name of the injected init container (migrations.io/container-name).
    #[arg(long, env = "MIGRATION_INJECTOR_DEFAULT_CONTAINER_NAME", default_value = defaults::CONTAINER_NAME, value_parser = text(Key::ContainerName))]
    pub default_container_name: String,
    /// `first` or `last` among existing init containers (migrations.io/position).
    #[arg(long, env = "MIGRATION_INJECTOR_DEFAULT_POSITION", default_value = defaults::POSITION.as_str(), value_parser = checked(Key::Position, values::parse_position))]
    pub default_position: Position,
    /// CPU request of the injected container (migrations.io/cpu-request).
    #[arg(long, env = "MIGRATION_INJECTOR_DEFAULT_CPU_REQUEST", value_parser = quantity(Key::CpuRequest))]
    pub default_cpu_request: Option<String>,
    /// CPU limit of the injected container (migrations.io/cpu-limit).
    #[arg(long, env = "MIGRATION_INJECTOR_DEFAULT_CPU_LIMIT", value_parser = quantity(Key::CpuLimit))]
    pub default_cpu_limit: Option<String>,
    /// Memory request of the injected container (migrations.io/memory-request).
    #[arg(long, env = "MIGRATION_INJECTOR_DEFAULT_MEMORY_REQUEST", value_parser = quantity(Key::MemoryRequest))]
    pub default_memory_request: Option<String>,
    /// Memory limit of the injected container (migrations.io/memory-limit).
    #[arg(long, env = "MIGRATION_INJECTOR_DEFAULT_MEMORY_LIMIT", value_parser = quantity(Key::MemoryLimit))]
    pub default_memory_limit: Option<String>,
    /// Atlas --lock-timeout appended to the default args (migrations.io/lock-timeout); unset
    /// keeps the guide's args exactly.
    #[arg(long, env = "MIGRATION_INJECTOR_DEFAULT_LOCK_TIMEOUT", value_parser = text(Key::LockTimeout))]
    pub default_lock_timeout: Option<String>,
    /// Migrations directory for the default args with migrations.io/url-secret (migrations.io/dir).
    #[arg(long, env = "MIGRATION_INJECTOR_DEFAULT_DIR", default_value = defaults::DIR, value_parser = text(Key::Dir))]
    pub default_dir: String,
    /// JSON object used as the injected container's securityContext (default: restricted, no
    /// privilege escalation, drop ALL, RuntimeDefault seccomp, runAsNonRoot, read-only root FS);
    /// `{}` injects none. Checked against the Kubernetes SecurityContext schema at start (wrong
    /// types and unknown fields are refused).
    #[arg(long, env = "MIGRATION_INJECTOR_SECURITY_CONTEXT", default_value_t = SecurityContextArg(Some(restricted_security_context())), value_parser = SecurityContextParser)]
    pub security_context: SecurityContextArg,
    /// Comma-separated image prefixes allowed in migrations.io/image (empty: any image).
    /// Prefixes match on path boundaries.
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_ALLOWED_IMAGE_PREFIXES",
        value_delimiter = ','
    )]
    pub allowed_image_prefixes: Vec<String>,
    /// How often a workload's migration runs (migrations.io/run): `every-pod` (in every pod,
    /// before the app) or `once` (once per revision by the controller; pods wait for it; needs
    /// --waiter-image).
    #[arg(long, env = "MIGRATION_INJECTOR_RUN_MODE", default_value = defaults::RUN_MODE.as_str(), value_parser = checked(Key::Run, values::parse_run_mode))]
    pub run_mode: RunMode,
    /// Image of the init container that makes pods wait in run-once mode: migration-injector's
    /// own image. Unset: run-once mode is unavailable and workloads asking for it are refused.
    #[arg(long, env = "MIGRATION_INJECTOR_WAITER_IMAGE", value_parser = checked(Key::Image, waiter_image))]
    pub waiter_image: Option<String>,
}

fn waiter_image(key: Key, value: &str) -> Result<String, Denial> {
    migration_injector::mutate::validate::image_reference(value)
        .map(|_| value.to_owned())
        .map_err(|problem| {
            Denial::invalid(key, value, problem, "use migration-injector's own image")
        })
}

/// A JSON array of strings (its own type, so clap takes it as one value).
#[derive(Debug, Clone, PartialEq)]
pub struct StringList(pub Vec<String>);

/// A container securityContext checked against the Kubernetes schema.
#[derive(Debug, Clone, PartialEq)]
pub struct SecurityContextArg(pub Option<Map<String, Value>>);

impl fmt::Display for SecurityContextArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = self.0.clone().unwrap_or_default();
        f.write_str(&Value::Object(map).to_string())
    }
}

impl From<InjectionArgs> for InjectorConfig {
    fn from(a: InjectionArgs) -> Self {
        InjectorConfig {
            secret: a.default_secret,
            volume_name: a.default_volume_name,
            env: a.default_env,
            mount_path: a.default_mount_path,
            config_file: a.default_config_file,
            args: a.default_args.map(|l| l.0),
            command: a.default_command.map(|l| l.0),
            pull_policy: a.default_pull_policy,
            container_name: a.default_container_name,
            position: a.default_position,
            cpu_request: a.default_cpu_request,
            cpu_limit: a.default_cpu_limit,
            memory_request: a.default_memory_request,
            memory_limit: a.default_memory_limit,
            lock_timeout: a.default_lock_timeout,
            dir: a.default_dir,
            security_context: a.security_context.0,
            allowed_image_prefixes: a
                .allowed_image_prefixes
                .into_iter()
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect(),
            run_mode: a.run_mode,
            waiter_image: a.waiter_image,
        }
    }
}

/// A clap error naming the flag and its env var, in the words of the annotation's rule.
fn flag_error(
    cmd: &clap::Command,
    arg: Option<&clap::Arg>,
    value: &str,
    problem: &str,
) -> clap::Error {
    let flag = arg.and_then(clap::Arg::get_long).unwrap_or("?");
    let env = arg
        .and_then(clap::Arg::get_env)
        .map_or_else(String::new, |e| e.to_string_lossy().into_owned());
    clap::Error::raw(
        ErrorKind::ValueValidation,
        format!("flag --{flag} (env {env}) = {value:?} {problem}\n"),
    )
    .with_cmd(cmd)
}

/// Runs an annotation value rule as a clap value parser.
#[derive(Clone)]
struct Checked<T> {
    key: Key,
    parse: fn(Key, &str) -> Result<T, Denial>,
}

fn checked<T>(key: Key, parse: fn(Key, &str) -> Result<T, Denial>) -> Checked<T> {
    Checked { key, parse }
}

fn text(key: Key) -> Checked<String> {
    checked(key, |k, v| values::parse_text(k, v).map(str::to_owned))
}

fn quantity(key: Key) -> Checked<String> {
    checked(key, |k, v| {
        values::parse_quantity(k, v).map(|_| v.to_owned())
    })
}

impl<T: Clone + Send + Sync + 'static> TypedValueParser for Checked<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let text = value.to_string_lossy();
        (self.parse)(self.key, &text).map_err(|d| {
            let problem = match d {
                Denial::InvalidAnnotation { problem, fix, .. } => format!("{problem}; fix: {fix}"),
                other => other.to_string(),
            };
            flag_error(cmd, arg, &text, &problem)
        })
    }
}

/// Parses `--security-context` as a Kubernetes SecurityContext: wrong types and unknown
/// fields are refused at start, not by the API server on every admission.
#[derive(Clone)]
struct SecurityContextParser;

impl TypedValueParser for SecurityContextParser {
    type Value = SecurityContextArg;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<SecurityContextArg, clap::Error> {
        let text = value.to_string_lossy();
        let fail = |problem: String| flag_error(cmd, arg, &text, &problem);
        let map = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Null) => return Ok(SecurityContextArg(None)),
            Ok(Value::Object(map)) if map.is_empty() => return Ok(SecurityContextArg(None)),
            Ok(Value::Object(map)) => map,
            _ => {
                return Err(fail(
                    "is not a JSON object (a container securityContext)".into(),
                ))
            }
        };
        let typed: SecurityContext = serde_json::from_value(Value::Object(map.clone()))
            .map_err(|e| fail(format!("is not a container securityContext: {e}")))?;
        // k8s-openapi skips fields it does not know; a round trip that loses one finds it.
        let back = serde_json::to_value(&typed).unwrap_or(Value::Null);
        if let Some(unknown) = map.keys().find(|k| back.get(k.as_str()).is_none()) {
            return Err(fail(format!(
                "has a field {unknown:?} that a container securityContext does not have"
            )));
        }
        Ok(SecurityContextArg(Some(map)))
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

    fn parse(flags: &[&str]) -> Result<InjectorConfig, String> {
        Wrapper::try_parse_from(std::iter::once("x").chain(flags.iter().copied()))
            .map(|w| w.args.into())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn flag_defaults_equal_the_guide() {
        assert_eq!(parse(&[]).unwrap(), InjectorConfig::default());
    }

    #[test]
    fn bad_flags_name_flag_and_env() {
        let err = parse(&["--default-pull-policy", r#"Sometimes"#]).unwrap_err();
        assert!(
            err.contains("--default-pull-policy")
                && err.contains("MIGRATION_INJECTOR_DEFAULT_PULL_POLICY"),
            "{err}"
        );
        assert!(parse(&["--security-context", r#"[1]"#]).is_err());
        assert_eq!(
            parse(&["--security-context", r#"{}"#])
                .unwrap()
                .security_context,
            None
        );
        assert!(parse(&["--default-memory-limit", "lots"]).is_err());
    }

    #[test]
    fn security_context_is_checked_against_the_schema() {
        let err = parse(&["--security-context", r#"{"runAsNonRoot":"yes"}"#]).unwrap_err();
        assert!(
            err.contains("--security-context")
                && err.contains("MIGRATION_INJECTOR_SECURITY_CONTEXT"),
            "{err}"
        );
        let err = parse(&["--security-context", r#"{"runAsNonroot":true}"#]).unwrap_err();
        assert!(err.contains("runAsNonroot"), "{err}");
        let ok = parse(&[
            "--security-context",
            r#"{"runAsUser":1000,"capabilities":{"drop":["ALL"]}}"#,
        ])
        .unwrap();
        assert_eq!(ok.security_context.unwrap()["runAsUser"], 1000);
    }
}
