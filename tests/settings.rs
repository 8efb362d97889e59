//! One source per setting: the README's flag tables are the output of the hidden `docs flags`
//! subcommand (rendered from clap's definitions), and the Helm chart sets every env var `serve`
//! reads, from `config.*` values that values.yaml and values.schema.json both declare. Also the
//! renamed `--ca-bundle-check-interval`'s old flag and old env var.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_migration-injector");
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/migration-injector");

/// `serve` flags with no env var, so the chart cannot set them: both only make sense for a
/// local run (an in-memory CA for localhost), and a cluster install uses a real TLS mode.
const NO_ENV: &[&str] = &["--self-signed", "--self-signed-ca-out"];

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn docs(args: &[&str]) -> String {
    let out = Command::new(BIN).arg("docs").args(args).output().unwrap();
    assert!(out.status.success(), "docs {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// `docs flags serve --format json`: one object per flag.
fn serve_flags() -> Vec<Value> {
    let list: Value = serde_json::from_str(&docs(&["flags", "serve", "--format", "json"])).unwrap();
    list.as_array().unwrap().clone()
}

fn text<'a>(flag: &'a Value, field: &str) -> Option<&'a str> {
    flag.get(field).and_then(Value::as_str)
}

/// What lies between the lines `<!-- MARKER:start -->` and `<!-- MARKER:end -->`.
fn block<'a>(readme: &'a str, marker: &str) -> &'a str {
    let start = format!("<!-- {marker}:start -->\n");
    let end = format!("<!-- {marker}:end -->");
    let from = readme
        .find(&start)
        .unwrap_or_else(|| panic!("README.md has no line {}", start.trim_end()))
        + start.len();
    let to = readme[from..]
        .find(&end)
        .unwrap_or_else(|| panic!("README.md has no {end}"));
    &readme[from..from + to]
}

#[test]
fn readme_flag_tables_are_the_generated_ones() {
    let readme = read(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
    for (command, marker) in [
        ("serve", "flags"),
        ("check", "check-flags"),
        ("controller", "controller-flags"),
    ] {
        let generated = docs(&["flags", command]);
        assert!(
            block(&readme, marker) == generated,
            "README.md's `{command}` flag table (between <!-- {marker}:start --> and \
             <!-- {marker}:end -->) is not what the flags' definitions say. Regenerate it with \
             `cargo run --quiet -- docs update-readme README.md` (or paste the output of \
             `cargo run --quiet -- docs flags {command}`). Generated:\n{generated}"
        );
    }
}

#[test]
fn the_chart_sets_every_env_var_serve_reads() {
    let helpers = read(format!("{CHART}/templates/_helpers.tpl"));
    let values: Value = serde_yaml_ng::from_str(&read(format!("{CHART}/values.yaml"))).unwrap();
    let schema: Value = serde_json::from_str(&read(format!("{CHART}/values.schema.json"))).unwrap();
    let flags = serve_flags();
    let mut problems: Vec<String> = NO_ENV
        .iter()
        .filter(|n| {
            !flags
                .iter()
                .any(|f| text(f, "flag") == Some(**n) && text(f, "env").is_none())
        })
        .map(|n| format!("NO_ENV lists {n}, which is not a serve flag without an env var"))
        .collect();
    for flag in flags {
        let name = text(&flag, "flag").unwrap_or("?");
        let Some(env) = text(&flag, "env") else {
            if !NO_ENV.contains(&name) {
                problems.push(format!(
                    "{name} has no env var: give it env = \"MIGRATION_INJECTOR_...\" (the chart sets flags through env vars)"
                ));
            }
            continue;
        };
        if !helpers.contains(&format!("\"{env}\"")) {
            problems.push(format!(
                "{name}: {env} is not set in templates/_helpers.tpl (migration-injector.env)"
            ));
        }
        match (text(&flag, "chart_value"), text(&flag, "chart_derived")) {
            (Some(path), _) => {
                if pointer(&values, path, false).is_none() {
                    problems.push(format!("{name}: chart value {path} is not in values.yaml"));
                }
                if pointer(&schema, path, true).is_none() {
                    problems.push(format!(
                        "{name}: chart value {path} is not in values.schema.json"
                    ));
                }
                if let Some(key) = path.strip_prefix("config.") {
                    if !set_together(&helpers, env, &format!("$c.{key}")) {
                        problems.push(format!(
                            "{name}: _helpers.tpl does not set {env} from $c.{key}"
                        ));
                    }
                }
            }
            (None, Some(_)) => {}
            (None, None) => problems.push(format!(
                "{name}: {env} has no entry in CHART (src/cli/docs.rs): which value sets it?"
            )),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A value in values.yaml (`schema`: in values.schema.json) by its dotted path.
fn pointer<'a>(root: &'a Value, path: &str, schema: bool) -> Option<&'a Value> {
    path.split('.').try_fold(root, |node, key| {
        if schema {
            node.get("properties")?.get(key)
        } else {
            node.get(key)
        }
    })
}

/// Whether a line naming `env`, or the line before it (a `with` block), reads `value`.
fn set_together(helpers: &str, env: &str, value: &str) -> bool {
    let lines: Vec<&str> = helpers.lines().collect();
    let quoted = format!("\"{env}\"");
    let reads = |line: &str| {
        line.match_indices(value).any(|(i, _)| {
            !line[i + value.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        })
    };
    lines
        .iter()
        .enumerate()
        .any(|(i, line)| line.contains(&quoted) && (reads(line) || i > 0 && reads(lines[i - 1])))
}

#[test]
fn config_values_agree_across_helpers_values_schema_and_flags() {
    let helpers = read(format!("{CHART}/templates/_helpers.tpl"));
    let used: BTreeSet<String> = regex::Regex::new(r"\$c\.([A-Za-z0-9_]+)")
        .unwrap()
        .captures_iter(&helpers)
        .map(|c| c[1].to_owned())
        .collect();
    let values: Value = serde_yaml_ng::from_str(&read(format!("{CHART}/values.yaml"))).unwrap();
    let declared: BTreeSet<String> = values["config"]
        .as_object()
        .expect("values.yaml has a config map")
        .keys()
        .cloned()
        .collect();
    let schema: Value = serde_json::from_str(&read(format!("{CHART}/values.schema.json"))).unwrap();
    let typed: BTreeSet<String> = schema["properties"]["config"]["properties"]
        .as_object()
        .expect("values.schema.json has config.properties")
        .keys()
        .cloned()
        .collect();
    let flags: BTreeSet<String> = serve_flags()
        .iter()
        .filter_map(|f| text(f, "chart_value")?.strip_prefix("config."))
        .map(str::to_owned)
        .collect();
    let mut problems = Vec::new();
    for (what, set) in [
        ("values.yaml config", &declared),
        ("values.schema.json config", &typed),
        ("the flags' chart values (CHART in src/cli/docs.rs)", &flags),
    ] {
        for missing in used.difference(set) {
            problems.push(format!(
                "$c.{missing} is read in _helpers.tpl but missing from {what}"
            ));
        }
        for unused in set.difference(&used) {
            problems.push(format!(
                "config.{unused} is in {what} but _helpers.tpl never reads $c.{unused}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `serve --self-signed` with a memory budget too small for the largest body, so the process
/// stops right after the flags (and the check interval) were accepted, without binding.
fn serve_until_limits(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--self-signed", "--memory-budget-bytes", "1"])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("MIGRATION_INJECTOR_CA_BUNDLE_CHECK_INTERVAL")
        .env_remove("MIGRATION_INJECTOR_SELF_MANAGED_CHECK_INTERVAL");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn accepted(out: &Output) -> bool {
    let stderr = String::from_utf8_lossy(&out.stderr);
    !out.status.success() && stderr.contains("--memory-budget-bytes (1) must be at least twice")
}

#[test]
fn the_check_interval_keeps_its_old_flag_and_env_var() {
    const OLD_ENV: &str = "MIGRATION_INJECTOR_SELF_MANAGED_CHECK_INTERVAL";
    const NEW_ENV: &str = "MIGRATION_INJECTOR_CA_BUNDLE_CHECK_INTERVAL";
    let stderr = |out: &Output| String::from_utf8_lossy(&out.stderr).into_owned();

    // Both names and both env vars are accepted.
    for (args, envs) in [
        (&["--ca-bundle-check-interval", "30"][..], &[][..]),
        (&["--self-managed-check-interval", "30"][..], &[][..]),
        (&[][..], &[(NEW_ENV, "30")][..]),
        (&[][..], &[(OLD_ENV, "30")][..]),
        // Agreeing values are fine.
        (
            &["--ca-bundle-check-interval", "30"][..],
            &[(OLD_ENV, "30")][..],
        ),
    ] {
        let out = serve_until_limits(args, envs);
        assert!(accepted(&out), "{args:?} {envs:?}: {}", stderr(&out));
    }

    // The old flag is the new one under another name: its value is checked by the new rule.
    let out = serve_until_limits(&["--self-managed-check-interval", "0"], &[]);
    assert!(
        !accepted(&out) && stderr(&out).contains("--ca-bundle-check-interval"),
        "{}",
        stderr(&out)
    );

    // The old env var is really read: a bad value there stops the start, naming it.
    let out = serve_until_limits(&[], &[(OLD_ENV, "0")]);
    assert!(
        !accepted(&out) && stderr(&out).contains(OLD_ENV),
        "{}",
        stderr(&out)
    );

    // The new name (flag, old flag or env) and the old env var disagreeing is refused.
    for (args, envs) in [
        (
            &["--ca-bundle-check-interval", "45"][..],
            &[(OLD_ENV, "30")][..],
        ),
        (
            &["--self-managed-check-interval", "45"][..],
            &[(OLD_ENV, "30")][..],
        ),
        (&[][..], &[(NEW_ENV, "45"), (OLD_ENV, "30")][..]),
    ] {
        let out = serve_until_limits(args, envs);
        let err = stderr(&out);
        assert!(
            !out.status.success() && err.contains("disagree") && err.contains(OLD_ENV),
            "{args:?} {envs:?}: {err}"
        );
    }
}

/// The chart ships the CRD `docs crd` generates from the Rust type, byte for byte.
#[test]
fn the_charts_crd_is_the_generated_one() {
    let shipped = read(format!("{CHART}/files/crd-migrationruns.yaml"));
    let generated = docs(&["crd"]);
    assert!(
        shipped == generated,
        "charts/migration-injector/files/crd-migrationruns.yaml differs from `docs crd`: \
         regenerate it with `cargo run --quiet -- docs crd > \
         charts/migration-injector/files/crd-migrationruns.yaml`"
    );
}
