//! `migration-injector docs` (hidden): the README's flag tables, rendered from clap's
//! definitions so they cannot drift from the binary. `tests/settings.rs` fails when the README
//! differs from this output, or when the chart does not set a flag the server reads.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Arg, Args, CommandFactory, Subcommand, ValueEnum};
use serde_json::{json, Value};

use super::Cli;

#[derive(Debug, Subcommand)]
pub enum DocsCommand {
    /// Print a subcommand's flags: the README's table between its markers, or JSON.
    Flags(FlagsArgs),
    /// Print the MigrationRun CRD manifest (the chart's files/crd-migrationruns.yaml).
    Crd,
    /// Rewrite every generated flag table of a README in place.
    UpdateReadme {
        #[arg(default_value = "README.md")]
        path: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct FlagsArgs {
    #[arg(value_enum, default_value = "serve")]
    pub command: Documented,
    #[arg(long, value_enum, default_value = "markdown")]
    pub format: Format,
}

/// The subcommands whose flags the README tabulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Documented {
    Serve,
    Check,
    Controller,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Markdown,
    Json,
}

impl Documented {
    const ALL: [Documented; 3] = [Documented::Serve, Documented::Check, Documented::Controller];

    fn name(self) -> &'static str {
        match self {
            Documented::Serve => "serve",
            Documented::Check => "check",
            Documented::Controller => "controller",
        }
    }

    /// The README's marker comments around this table: `<!-- NAME:start -->`, `<!-- NAME:end -->`.
    fn marker(self) -> &'static str {
        match self {
            Documented::Serve => "flags",
            Documented::Check => "check-flags",
            Documented::Controller => "controller-flags",
        }
    }

    /// How the chart sets this subcommand's env vars (`check` is not run by the chart).
    fn chart(self) -> Option<&'static [(&'static str, Chart)]> {
        match self {
            Documented::Serve => Some(CHART),
            Documented::Check => None,
            Documented::Controller => Some(CONTROLLER_CHART),
        }
    }
}

/// How the Helm chart sets a `serve` env var.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chart {
    /// From this value (its path in values.yaml).
    Value(&'static str),
    /// From the release itself, with no value of its own (it must match what the chart renders).
    Derived(&'static str),
}

/// Every `serve` env var and how the chart sets it: the README's "Chart" column. Keyed by env
/// var, which is what `_helpers.tpl` names; tests/settings.rs checks it against the chart.
#[rustfmt::skip] // one line per env var reads as the table it is
const CHART: &[(&str, Chart)] = &[
    ("MIGRATION_INJECTOR_LISTEN", Chart::Value("config.listen")),
    ("MIGRATION_INJECTOR_ADMIN_LISTEN", Chart::Value("config.adminListen")),
    ("MIGRATION_INJECTOR_SHUTDOWN_DELAY_SECONDS", Chart::Value("config.shutdownDelaySeconds")),
    ("MIGRATION_INJECTOR_SHUTDOWN_GRACE_SECONDS", Chart::Value("config.shutdownGraceSeconds")),
    ("MIGRATION_INJECTOR_RUN_STATUS_CACHE", Chart::Derived("`controller.enabled`")),
    ("MIGRATION_INJECTOR_TLS_CERT_FILE", Chart::Value("config.tlsCertFile")),
    ("MIGRATION_INJECTOR_TLS_KEY_FILE", Chart::Value("config.tlsKeyFile")),
    ("MIGRATION_INJECTOR_CERT_RELOAD_INTERVAL", Chart::Value("config.certReloadInterval")),
    ("MIGRATION_INJECTOR_MANAGE_CA_BUNDLE", Chart::Value("tls.manageCaBundle")),
    ("MIGRATION_INJECTOR_TLS_CA_FILE", Chart::Derived("with `tls.manageCaBundle`: the mounted Secret's `ca.crt`")),
    ("MIGRATION_INJECTOR_SELF_MANAGED", Chart::Derived("`tls.mode=selfManaged`")),
    ("MIGRATION_INJECTOR_NAMESPACE", Chart::Derived("the pod's namespace")),
    ("MIGRATION_INJECTOR_SERVICE_NAME", Chart::Derived("the chart's Service")),
    ("MIGRATION_INJECTOR_CA_SECRET_NAME", Chart::Derived("`<fullname>-self-managed-ca`")),
    ("MIGRATION_INJECTOR_WEBHOOK_CONFIG_NAME", Chart::Derived("the chart's MutatingWebhookConfiguration")),
    ("MIGRATION_INJECTOR_CERT_IPS", Chart::Value("tls.selfManaged.extraIPs")),
    ("MIGRATION_INJECTOR_POD_NAME", Chart::Derived("the pod's name")),
    ("MIGRATION_INJECTOR_SELF_MANAGED_CERT_DAYS", Chart::Value("tls.selfManaged.certDays")),
    ("MIGRATION_INJECTOR_CA_BUNDLE_CHECK_INTERVAL", Chart::Value("config.caBundleCheckInterval")),
    ("MIGRATION_INJECTOR_MAX_BODY_BYTES", Chart::Value("config.maxBodyBytes")),
    ("MIGRATION_INJECTOR_MEMORY_BUDGET_BYTES", Chart::Value("config.memoryBudgetBytes")),
    ("MIGRATION_INJECTOR_REQUEST_TIMEOUT_SECONDS", Chart::Value("config.requestTimeoutSeconds")),
    ("MIGRATION_INJECTOR_MAX_CONNECTIONS", Chart::Value("config.maxConnections")),
    ("MIGRATION_INJECTOR_IDLE_TIMEOUT_SECONDS", Chart::Value("config.idleTimeoutSeconds")),
    ("MIGRATION_INJECTOR_MAX_CONCURRENT_STREAMS", Chart::Value("config.maxConcurrentStreams")),
    ("MIGRATION_INJECTOR_LOG_FORMAT", Chart::Value("config.logFormat")),
    ("MIGRATION_INJECTOR_LOG_LEVEL", Chart::Value("config.logLevel")),
    ("MIGRATION_INJECTOR_DEFAULT_SECRET", Chart::Value("config.defaultSecret")),
    ("MIGRATION_INJECTOR_DEFAULT_VOLUME_NAME", Chart::Value("config.defaultVolumeName")),
    ("MIGRATION_INJECTOR_DEFAULT_ENV", Chart::Value("config.defaultEnv")),
    ("MIGRATION_INJECTOR_DEFAULT_MOUNT_PATH", Chart::Value("config.defaultMountPath")),
    ("MIGRATION_INJECTOR_DEFAULT_CONFIG_FILE", Chart::Value("config.defaultConfigFile")),
    ("MIGRATION_INJECTOR_DEFAULT_ARGS", Chart::Value("config.defaultArgs")),
    ("MIGRATION_INJECTOR_DEFAULT_COMMAND", Chart::Value("config.defaultCommand")),
    ("MIGRATION_INJECTOR_DEFAULT_PULL_POLICY", Chart::Value("config.defaultPullPolicy")),
    ("MIGRATION_INJECTOR_DEFAULT_CONTAINER_NAME", Chart::Value("config.defaultContainerName")),
    ("MIGRATION_INJECTOR_DEFAULT_POSITION", Chart::Value("config.defaultPosition")),
    ("MIGRATION_INJECTOR_DEFAULT_CPU_REQUEST", Chart::Value("config.defaultCpuRequest")),
    ("MIGRATION_INJECTOR_DEFAULT_CPU_LIMIT", Chart::Value("config.defaultCpuLimit")),
    ("MIGRATION_INJECTOR_DEFAULT_MEMORY_REQUEST", Chart::Value("config.defaultMemoryRequest")),
    ("MIGRATION_INJECTOR_DEFAULT_MEMORY_LIMIT", Chart::Value("config.defaultMemoryLimit")),
    ("MIGRATION_INJECTOR_DEFAULT_LOCK_TIMEOUT", Chart::Value("config.defaultLockTimeout")),
    ("MIGRATION_INJECTOR_DEFAULT_DIR", Chart::Value("config.defaultDir")),
    ("MIGRATION_INJECTOR_SECURITY_CONTEXT", Chart::Value("config.securityContext")),
    ("MIGRATION_INJECTOR_ALLOWED_IMAGE_PREFIXES", Chart::Value("config.allowedImagePrefixes")),
    ("MIGRATION_INJECTOR_RUN_MODE", Chart::Value("config.runMode")),
    ("MIGRATION_INJECTOR_WAITER_IMAGE", Chart::Derived("with `controller.enabled`: the chart's own image")),
];

/// Every `controller` env var and how the chart's controller Deployment sets it.
#[rustfmt::skip]
const CONTROLLER_CHART: &[(&str, Chart)] = &[
    ("MIGRATION_INJECTOR_NAMESPACE", Chart::Derived("the pod's namespace")),
    ("MIGRATION_INJECTOR_POD_NAME", Chart::Derived("the pod's name")),
    ("MIGRATION_INJECTOR_LEASE_NAME", Chart::Value("controller.leaseName")),
    ("MIGRATION_INJECTOR_ADMIN_LISTEN", Chart::Derived("the chart's admin port")),
    ("MIGRATION_INJECTOR_MAX_ATTEMPTS", Chart::Value("controller.maxAttempts")),
    ("MIGRATION_INJECTOR_JOB_DEADLINE_SECONDS", Chart::Value("controller.jobDeadlineSeconds")),
    ("MIGRATION_INJECTOR_LOG_FORMAT", Chart::Value("config.logFormat")),
    ("MIGRATION_INJECTOR_LOG_LEVEL", Chart::Value("config.logLevel")),
];

fn chart(documented: Documented, env: &str) -> Option<Chart> {
    documented
        .chart()?
        .iter()
        .find(|(e, _)| *e == env)
        .map(|(_, c)| *c)
}

pub fn docs(command: DocsCommand) -> Result<()> {
    match command {
        DocsCommand::Flags(args) => {
            let text = match args.format {
                Format::Markdown => markdown(args.command)?,
                Format::Json => format!("{:#}\n", json_list(args.command)?),
            };
            print!("{text}");
            Ok(())
        }
        DocsCommand::Crd => {
            print!("{}", migration_injector::controller::crd::crd_yaml()?);
            Ok(())
        }
        DocsCommand::UpdateReadme { path } => {
            let mut readme = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            for documented in Documented::ALL {
                readme = splice(&readme, documented.marker(), &markdown(documented)?)
                    .with_context(|| format!("in {}", path.display()))?;
            }
            std::fs::write(&path, readme).with_context(|| format!("writing {}", path.display()))
        }
    }
}

/// The documented flags of a subcommand, in definition order (clap's help and version are left
/// out, as are hidden flags).
fn flags(documented: Documented) -> Result<Vec<Arg>> {
    let cmd = Cli::command();
    let sub = cmd
        .find_subcommand(documented.name())
        .with_context(|| format!("no subcommand {}", documented.name()))?;
    Ok(sub
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !matches!(a.get_id().as_str(), "help" | "version"))
        .cloned()
        .collect())
}

/// `-n`, `--namespace`, or a positional's value name.
fn flag_names(arg: &Arg) -> Vec<String> {
    let mut names: Vec<String> = arg
        .get_short()
        .map(|s| format!("-{s}"))
        .into_iter()
        .collect();
    names.extend(arg.get_long().map(|l| format!("--{l}")));
    if names.is_empty() {
        names.extend(
            arg.get_value_names()
                .into_iter()
                .flatten()
                .map(ToString::to_string),
        );
    }
    names
}

/// The help text on one line (clap's long help when there is one).
fn help(arg: &Arg) -> String {
    arg.get_long_help()
        .or_else(|| arg.get_help())
        .map(|h| {
            h.to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn env(arg: &Arg) -> Option<String> {
    arg.get_env().map(|e| e.to_string_lossy().into_owned())
}

fn default(arg: &Arg) -> Option<String> {
    let values: Vec<_> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

fn code(text: &str) -> String {
    format!("`{text}`")
}

/// A table cell: one line, pipes escaped.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

fn markdown(documented: Documented) -> Result<String> {
    let with_chart = documented.chart().is_some();
    let mut out = String::from(if with_chart {
        "| Flag | Env | Default | Chart | Meaning |\n|---|---|---|---|---|\n"
    } else {
        "| Flag | Env | Default | Meaning |\n|---|---|---|---|\n"
    });
    for arg in flags(documented)? {
        let names: Vec<_> = flag_names(&arg).iter().map(|n| code(n)).collect();
        let mut row = vec![
            names.join(", "),
            env(&arg).map(|e| code(&e)).unwrap_or_default(),
            default(&arg).map(|d| code(&d)).unwrap_or_default(),
        ];
        if with_chart {
            row.push(
                match env(&arg).as_deref().and_then(|e| chart(documented, e)) {
                    Some(Chart::Value(path)) => code(path),
                    Some(Chart::Derived(how)) => how.to_owned(),
                    None => String::new(),
                },
            );
        }
        row.push(help(&arg));
        let row: Vec<_> = row.iter().map(|c| cell(c)).collect();
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    Ok(out)
}

/// The same facts for programs: flag, env, default, chart value or derivation, help.
fn json_list(documented: Documented) -> Result<Value> {
    let list = flags(documented)?
        .iter()
        .map(|arg| {
            let chart = env(arg).as_deref().and_then(|e| chart(documented, e));
            json!({
                "flag": flag_names(arg).last(),
                "aliases": arg.get_all_aliases().unwrap_or_default(),
                "env": env(arg),
                "default": default(arg),
                "chart_value": match chart { Some(Chart::Value(p)) => Some(p), _ => None },
                "chart_derived": match chart { Some(Chart::Derived(h)) => Some(h), _ => None },
                "help": help(arg),
            })
        })
        .collect();
    Ok(Value::Array(list))
}

/// `text` with the lines between `<!-- MARKER:start -->` and `<!-- MARKER:end -->` replaced.
fn splice(text: &str, marker: &str, block: &str) -> Result<String> {
    let (start, end) = (
        format!("<!-- {marker}:start -->\n"),
        format!("<!-- {marker}:end -->"),
    );
    let from = text
        .find(&start)
        .with_context(|| format!("no line {}", start.trim_end()))?
        + start.len();
    let to = from
        + text[from..]
            .find(&end)
            .with_context(|| format!("no {end} after {}", start.trim_end()))?;
    Ok(format!("{}{block}{}", &text[..from], &text[to..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chart_entry_names_an_env_var_of_its_subcommand() {
        for documented in Documented::ALL {
            let envs: Vec<_> = flags(documented).unwrap().iter().filter_map(env).collect();
            for (env, _) in documented.chart().unwrap_or_default() {
                assert!(
                    envs.iter().any(|e| e == env),
                    "stale chart entry {env} of {}",
                    documented.name()
                );
            }
        }
    }

    #[test]
    fn every_controller_env_var_has_a_chart_entry() {
        for arg in flags(Documented::Controller).unwrap() {
            let env = env(&arg).unwrap_or_else(|| panic!("{:?} has no env var", arg.get_id()));
            assert!(chart(Documented::Controller, &env).is_some(), "{env}");
        }
    }

    #[test]
    fn splice_replaces_only_between_the_markers() {
        let text = "a\n<!-- x:start -->\nold\n<!-- x:end -->\nb\n";
        assert_eq!(
            splice(text, "x", "new\n").unwrap(),
            "a\n<!-- x:start -->\nnew\n<!-- x:end -->\nb\n"
        );
        assert!(splice(text, "y", "new\n").is_err());
    }

    #[test]
    fn cells_stay_one_table_cell() {
        assert_eq!(cell("a|b"), "a\\|b");
        assert_eq!(help(&Arg::new("x").help("one\n  two")), "one two");
    }
}
