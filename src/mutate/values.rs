//! Annotation values: each key's rule, shared by the webhook (annotations) and the CLI (the
//! flags that set their defaults), so a value is accepted or refused the same way in both.

use super::annotations::Key;
use super::config::{Position, PullPolicy, RunMode};
use super::denial::Denial;
use super::validate;

pub(crate) fn invalid(key: Key, value: &str, problem: &str, fix: impl Into<String>) -> Denial {
    Denial::invalid(key, value, problem, fix)
}

/// Checks a single-string value by its key's rule.
pub fn parse_text(key: Key, value: &str) -> Result<&str, Denial> {
    type Check = fn(&str) -> Result<(), &'static str>;
    let (check, fix): (Check, &str) = match key {
        Key::Secret => (
            validate::dns_subdomain,
            "use the name of a Secret in the workload's namespace",
        ),
        Key::VolumeName | Key::ContainerName => (
            validate::dns_label,
            "use a lower-case RFC 1123 name such as \"migrate-db\"",
        ),
        Key::MountPath => (
            validate::mount_path,
            "use an absolute path such as \"/etc/atlas\"",
        ),
        Key::ConfigFile => (
            validate::relative_file,
            "use a file name inside the mount path such as \"atlas.hcl\"",
        ),
        Key::Env => (
            validate::word,
            "use the name of an env block of atlas.hcl such as \"k8s\"",
        ),
        Key::LockTimeout => (
            validate::duration,
            "use a duration such as \"5m\" or \"90s\"",
        ),
        Key::Dir => (
            validate::url,
            "use a directory URL such as \"file:///migrations\" or \"atlas://app\"",
        ),
        _ => (|_| Ok(()), ""),
    };
    check(value).map_err(|problem| invalid(key, value, problem, fix))?;
    Ok(value)
}

pub fn parse_pull_policy(key: Key, value: &str) -> Result<PullPolicy, Denial> {
    match value {
        "Always" => Ok(PullPolicy::Always),
        "IfNotPresent" => Ok(PullPolicy::IfNotPresent),
        "Never" => Ok(PullPolicy::Never),
        _ => Err(invalid(
            key,
            value,
            "is not an image pull policy",
            "use Always, IfNotPresent or Never",
        )),
    }
}

pub fn parse_position(key: Key, value: &str) -> Result<Position, Denial> {
    match value {
        "first" => Ok(Position::First),
        "last" => Ok(Position::Last),
        _ => Err(invalid(
            key,
            value,
            "is not a position",
            "use \"first\" or \"last\"",
        )),
    }
}

pub fn parse_run_mode(key: Key, value: &str) -> Result<RunMode, Denial> {
    match value {
        "once" => Ok(RunMode::Once),
        "every-pod" => Ok(RunMode::EveryPod),
        _ => Err(invalid(
            key,
            value,
            "is not a run mode",
            "use \"once\" (one run per revision, pods wait for it) or \"every-pod\"",
        )),
    }
}

pub fn parse_quantity(key: Key, value: &str) -> Result<i128, Denial> {
    validate::quantity(value).map_err(|problem| {
        let example = match key {
            Key::CpuRequest | Key::CpuLimit => "\"100m\" or \"0.5\"",
            _ => "\"128Mi\" or \"1Gi\"",
        };
        invalid(
            key,
            value,
            problem,
            format!("use a quantity such as {example}"),
        )
    })
}

pub fn parse_string_list(key: Key, value: &str) -> Result<Vec<String>, Denial> {
    serde_json::from_str::<Vec<String>>(value).map_err(|_| {
        invalid(
            key,
            value,
            "is not a JSON array of strings",
            r#"write it as JSON, for example ["migrate","up"]"#,
        )
    })
}

/// A `NAME/KEY` reference to one key of a Secret in the workload's namespace.
pub fn parse_secret_key_ref(key: Key, value: &str) -> Result<(&str, &str), Denial> {
    let fix = "write it as SECRET/KEY, for example \"app-db/uri\"";
    let Some((name, item)) = value.split_once('/') else {
        return Err(invalid(key, value, "is not SECRET/KEY", fix));
    };
    validate::dns_subdomain(name)
        .map_err(|p| invalid(key, value, &format!("has a Secret name that {p}"), fix))?;
    validate::secret_key(item)
        .map_err(|p| invalid(key, value, &format!("has a key that {p}"), fix))?;
    Ok((name, item))
}
