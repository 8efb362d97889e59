//! What to inject into one workload: the annotation values (or the configured defaults) turned
//! into the init container and volume, after validating each value.

use serde_json::{json, Map, Value};

use super::annotations::{Key, Layered};
use super::config::{defaults, InjectorConfig, Position};
use super::denial::{Denial, Quoted};
use super::validate;
use super::values::{
    invalid, parse_position, parse_pull_policy, parse_quantity, parse_secret_key_ref,
    parse_string_list, parse_text,
};

/// The resolved injection for one workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    pub container_name: String,
    /// `None` with `migrations.io/url-secret`: the config comes from an env var, not a volume.
    pub volume_name: Option<String>,
    pub position: Position,
    /// The init container, as JSON.
    pub container: Value,
    /// The Secret volume, as JSON (`Value::Null` when there is none).
    pub volume: Value,
    pub warnings: Vec<String>,
}

/// Whether `image` falls under `prefix`, on a path boundary: `ghcr.io/org` allows
/// `ghcr.io/org/app:1` but not `ghcr.io/organisation/app:1`.
fn image_allowed(image: &str, prefix: &str) -> bool {
    match image.strip_prefix(prefix) {
        Some(rest) => {
            rest.is_empty()
                || prefix.ends_with(['/', ':', '@'])
                || rest.starts_with(['/', ':', '@'])
        }
        None => false,
    }
}

/// Resolves the injection for a workload, or `None` when it does not opt in.
pub fn resolve<'v>(
    config: &'v InjectorConfig,
    annotations: Layered<'v, '_>,
) -> Result<Option<Injection>, Denial> {
    let Some(image) = annotations.get(Key::Image) else {
        return Ok(None);
    };
    let mut warnings = Vec::new();
    let reference = validate::image_reference(image).map_err(|problem| {
        invalid(
            Key::Image,
            image,
            problem,
            "set it to your migrations image, for example ghcr.io/org/migrations:v0.1.2",
        )
    })?;
    if !config.allowed_image_prefixes.is_empty()
        && !config
            .allowed_image_prefixes
            .iter()
            .any(|p| image_allowed(image, p))
    {
        return Err(Denial::ImageNotAllowed {
            image: image.to_owned(),
            allowed: config.allowed_image_prefixes.clone(),
        });
    }
    if reference.is_unpinned() {
        warnings.push(format!(
            "{}={} is not pinned (no tag, or :latest): pin a tag or digest so every rollout runs the same migrations",
            Key::Image,
            Quoted(image)
        ));
    }

    let text = |key: Key, default: &'v str| -> Result<&'v str, Denial> {
        match annotations.get(key) {
            Some(v) => parse_text(key, v),
            None => Ok(default),
        }
    };
    let secret = text(Key::Secret, &config.secret)?;
    let volume_name = text(Key::VolumeName, &config.volume_name)?;
    let env = text(Key::Env, &config.env)?;
    let mount_path = text(Key::MountPath, &config.mount_path)?;
    let config_file = text(Key::ConfigFile, &config.config_file)?;
    let container_name = text(Key::ContainerName, &config.container_name)?;
    let pull_policy = match annotations.get(Key::PullPolicy) {
        Some(v) => parse_pull_policy(Key::PullPolicy, v)?,
        None => config.pull_policy,
    };
    let position = match annotations.get(Key::Position) {
        Some(v) => parse_position(Key::Position, v)?,
        None => config.position,
    };
    let list = |key: Key, default: &Option<Vec<String>>| -> Result<Option<Vec<String>>, Denial> {
        match annotations.get(key) {
            Some(v) => parse_string_list(key, v).map(Some),
            None => Ok(default.clone()),
        }
    };
    let command = list(Key::Command, &config.command)?;
    let args = list(Key::Args, &config.args)?;
    // Who replaced the default args: the workload (refusals name its annotation) or the cluster.
    let args_by = if annotations.get(Key::Args).is_some() {
        Key::Args.name()
    } else {
        "the cluster's --default-args"
    };
    let url_secret = match annotations.get(Key::UrlSecret) {
        Some(v) => {
            if annotations.get(Key::Secret).is_some() {
                return Err(invalid(
                    Key::UrlSecret,
                    v,
                    &format!("cannot be set together with {}", Key::Secret),
                    format!(
                        "keep one: {} for a database URL in a Secret key, {} for a config file mounted from a Secret",
                        Key::UrlSecret,
                        Key::Secret
                    ),
                ));
            }
            Some(parse_secret_key_ref(Key::UrlSecret, v)?)
        }
        None => None,
    };
    let dir = text(Key::Dir, &config.dir)?;
    let lock_timeout = match annotations.get(Key::LockTimeout) {
        Some(v) => {
            let v = parse_text(Key::LockTimeout, v)?;
            if args.is_some() {
                return Err(invalid(
                    Key::LockTimeout,
                    v,
                    &format!("has no effect because {args_by} replaces the default args"),
                    format!(
                        "add --lock-timeout {v} to {} yourself, and remove {}",
                        Key::Args,
                        Key::LockTimeout
                    ),
                ));
            }
            Some(v)
        }
        None => config.lock_timeout.as_deref(),
    };
    let unused: &[Key] = match (args.is_some(), url_secret.is_some()) {
        (true, _) => &[Key::Env, Key::ConfigFile, Key::Dir],
        (false, true) => &[Key::Env, Key::ConfigFile, Key::MountPath, Key::VolumeName],
        (false, false) => &[Key::Dir],
    };
    for key in unused {
        if annotations.get(*key).is_some() {
            let why = if args.is_some() {
                format!("{args_by} replaces the default args")
            } else if url_secret.is_some() {
                format!(
                    "{} gives the database URL instead of a config file",
                    Key::UrlSecret
                )
            } else {
                format!("it applies only with {}", Key::UrlSecret)
            };
            warnings.push(format!("{key} has no effect because {why}"));
        }
    }
    let args = args.unwrap_or_else(|| {
        let mut args: Vec<String> = match url_secret {
            Some(_) => ["migrate", "apply", "--url"]
                .map(str::to_owned)
                .into_iter()
                .chain([
                    format!("$({})", defaults::URL_ENV),
                    "--dir".to_owned(),
                    dir.to_owned(),
                ])
                .collect(),
            None => vec![
                "migrate".to_owned(),
                "apply".to_owned(),
                "-c".to_owned(),
                format!("file://{}/{config_file}", mount_path.trim_end_matches('/')),
                "--env".to_owned(),
                env.to_owned(),
            ],
        };
        if let Some(t) = lock_timeout {
            args.extend(["--lock-timeout".to_owned(), t.to_owned()]);
        }
        args
    });

    let resources = resources(config, annotations)?;

    let mut container = Map::new();
    container.insert("name".into(), container_name.into());
    container.insert("image".into(), image.into());
    container.insert("imagePullPolicy".into(), pull_policy.as_str().into());
    if let Some(command) = command.filter(|c| !c.is_empty()) {
        container.insert("command".into(), command.into());
    }
    if !args.is_empty() {
        container.insert("args".into(), args.into());
    }
    if !resources.is_empty() {
        container.insert("resources".into(), Value::Object(resources));
    }
    if let Some(sc) = &config.security_context {
        container.insert("securityContext".into(), Value::Object(sc.clone()));
    }
    // A failed migration's last log lines become the termination message, so `kubectl describe
    // pod` and the pod's status show why (not only the container's log).
    container.insert(
        "terminationMessagePolicy".into(),
        "FallbackToLogsOnError".into(),
    );
    let (volume_name, volume) = match url_secret {
        Some((name, key)) => {
            container.insert(
                "env".into(),
                json!([{"name": defaults::URL_ENV,
                        "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}]),
            );
            (None, Value::Null)
        }
        None => {
            container.insert(
                "volumeMounts".into(),
                json!([{"name": volume_name, "mountPath": mount_path, "readOnly": true}]),
            );
            (
                Some(volume_name.to_owned()),
                json!({"name": volume_name, "secret": {"secretName": secret}}),
            )
        }
    };

    Ok(Some(Injection {
        container_name: container_name.to_owned(),
        volume_name,
        position,
        container: Value::Object(container),
        volume,
        warnings,
    }))
}

/// The `resources` block, with each request checked against its limit so the user gets our
/// message rather than the API server's.
fn resources(
    config: &InjectorConfig,
    annotations: Layered<'_, '_>,
) -> Result<Map<String, Value>, Denial> {
    let mut requests = Map::new();
    let mut limits = Map::new();
    for (resource, req_key, lim_key, req_default, lim_default) in [
        (
            "cpu",
            Key::CpuRequest,
            Key::CpuLimit,
            &config.cpu_request,
            &config.cpu_limit,
        ),
        (
            "memory",
            Key::MemoryRequest,
            Key::MemoryLimit,
            &config.memory_request,
            &config.memory_limit,
        ),
    ] {
        let request = annotations.get(req_key).or(req_default.as_deref());
        let limit = annotations.get(lim_key).or(lim_default.as_deref());
        let req_value = request.map(|v| parse_quantity(req_key, v)).transpose()?;
        let lim_value = limit.map(|v| parse_quantity(lim_key, v)).transpose()?;
        if let (Some(r), Some(l), Some(request), Some(limit)) =
            (req_value, lim_value, request, limit)
        {
            if r > l {
                return Err(invalid(
                    req_key,
                    request,
                    &format!("is more than {lim_key}={}", Quoted(limit)),
                    format!("lower {req_key} or raise {lim_key}"),
                ));
            }
        }
        if let Some(v) = request {
            requests.insert(resource.into(), v.into());
        }
        if let Some(v) = limit {
            limits.insert(resource.into(), v.into());
        }
    }
    let mut out = Map::new();
    if !requests.is_empty() {
        out.insert("requests".into(), Value::Object(requests));
    }
    if !limits.is_empty() {
        out.insert("limits".into(), Value::Object(limits));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutate::annotations::MigrationAnnotations;

    fn annos(pairs: &[(Key, &str)]) -> MigrationAnnotations<'static> {
        let mut a = MigrationAnnotations::default();
        for (k, v) in pairs {
            a.set(*k, v.to_string());
        }
        a
    }

    fn resolve_with(
        config: &InjectorConfig,
        pairs: &[(Key, &str)],
    ) -> Result<Option<Injection>, Denial> {
        let w = annos(pairs);
        let t = MigrationAnnotations::default();
        resolve(
            config,
            Layered {
                workload: &w,
                template: &t,
            },
        )
    }

    #[test]
    fn guide_defaults() {
        let inj = resolve_with(
            &InjectorConfig::default(),
            &[(Key::Image, "ghcr.io/repo/migrations:v0.1.2")],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            inj.container["args"],
            json!([
                "migrate",
                "apply",
                "-c",
                "file:///etc/atlas/atlas.hcl",
                "--env",
                "k8s"
            ])
        );
        assert_eq!(inj.container["imagePullPolicy"], "Always");
        assert_eq!(
            inj.container["volumeMounts"],
            json!([{"name":"atlas-project","mountPath":"/etc/atlas","readOnly":true}])
        );
        assert_eq!(
            inj.volume,
            json!({"name":"atlas-project","secret":{"secretName":"atlas-project"}})
        );
        assert_eq!(
            inj.container["securityContext"]["capabilities"]["drop"],
            json!(["ALL"])
        );
        assert!(inj.container.get("resources").is_none());
        assert!(inj.warnings.is_empty());
    }

    #[test]
    fn no_image_no_injection() {
        assert_eq!(
            resolve_with(&InjectorConfig::default(), &[(Key::Env, "x")]).unwrap(),
            None
        );
    }

    #[test]
    fn allow_list_is_on_path_boundaries() {
        assert!(image_allowed("ghcr.io/org/app:1", "ghcr.io/org"));
        assert!(image_allowed("ghcr.io/org/app:1", "ghcr.io/org/"));
        assert!(!image_allowed("ghcr.io/organisation/app:1", "ghcr.io/org"));
        let config = InjectorConfig {
            allowed_image_prefixes: vec!["ghcr.io/org/".into(), "registry.corp".into()],
            ..InjectorConfig::default()
        };
        let err = resolve_with(&config, &[(Key::Image, "docker.io/evil/x:1")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            r#"annotation migrations.io/image="docker.io/evil/x:1" names an image outside the allowed registries; fix: use an image starting with one of: ghcr.io/org/, registry.corp"#
        );
        assert!(resolve_with(&config, &[(Key::Image, "registry.corp/x:1")]).is_ok());
    }

    #[test]
    fn request_above_limit_is_denied() {
        let err = resolve_with(
            &InjectorConfig::default(),
            &[
                (Key::Image, "a:1"),
                (Key::CpuRequest, "2"),
                (Key::CpuLimit, "1000m"),
            ],
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            r#"annotation migrations.io/cpu-request="2" is more than migrations.io/cpu-limit="1000m"; fix: lower migrations.io/cpu-request or raise migrations.io/cpu-limit"#
        );
    }
}
