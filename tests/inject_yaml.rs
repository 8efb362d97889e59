//! `inject` on real-world-shaped manifests (tests/fixtures/inject/): it changes only what it
//! injects, reads YAML as kubectl does, and writes what kubectl reads back identically.

use std::path::Path;
use std::process::Command;

use migration_injector::mutate::manifests::{inject_str, read_str};
use migration_injector::mutate::InjectorConfig;
use proptest::prelude::*;
use serde_json::{json, Value};
use similar::{ChangeTag, TextDiff};

/// Fixtures whose patch cannot go into the text (the pod spec is an aliased anchor): written anew.
const WRITTEN_ANEW: &[&str] = &["shared-template.yaml"];

fn fixtures() -> Vec<(String, String)> {
    let dir = Path::new("tests/fixtures/inject");
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    // The same install as Windows editors save it: BOM and CRLF.
    let install = out
        .iter()
        .find(|(n, _)| n == "install.yaml")
        .unwrap()
        .1
        .clone();
    out.push((
        "install-crlf-bom.yaml".into(),
        format!("\u{feff}{}", install.replace('\n', "\r\n")),
    ));
    out
}

/// The pod template of a workload object, if it is one.
fn template_mut(object: &mut Value) -> Option<&mut Value> {
    let pointer = match object["kind"].as_str()? {
        "Pod" => "",
        "CronJob" => "/spec/jobTemplate/spec/template",
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => "/spec/template",
        _ => return None,
    };
    object.pointer_mut(pointer)
}

/// `object` without what `inject` added (named by its `migrations.io/injected` record).
fn strip(object: &mut Value) {
    if object["kind"] == "List" {
        for item in object["items"].as_array_mut().into_iter().flatten() {
            strip(item);
        }
        return;
    }
    let Some(template) = template_mut(object) else {
        return;
    };
    let Some(record) = template
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
        .and_then(|a| a.remove("migrations.io/injected"))
    else {
        return;
    };
    let record: Value = serde_json::from_str(record.as_str().unwrap()).unwrap();
    for (list, key) in [("initContainers", "initContainer"), ("volumes", "volume")] {
        if let Some(name) = record[key].as_str() {
            let items = template["spec"][list].as_array_mut().unwrap();
            items.retain(|i| i["name"] != name);
        }
    }
    // Containers made by inject when absent; empty ones are compared as absent.
    let spec = template["spec"].as_object_mut().unwrap();
    spec.retain(|k, v| !(["initContainers", "volumes"].contains(&k.as_str()) && v == &json!([])));
    let metadata = template["metadata"].as_object_mut().unwrap();
    if metadata["annotations"] == json!({}) {
        metadata.remove("annotations");
    }
    // Run-once mode's label.
    if let Some(fp) = record["fingerprint"].as_str() {
        let labels = metadata["labels"].as_object_mut().unwrap();
        assert_eq!(labels.remove("migrations.io/fingerprint"), Some(json!(fp)));
        if labels.is_empty() {
            metadata.remove("labels");
        }
    }
    if metadata.is_empty() {
        template.as_object_mut().unwrap().remove("metadata");
    }
}

fn normalise(mut docs: Vec<Value>) -> Vec<Value> {
    for d in &mut docs {
        strip(d);
        if let Some(spec) = template_mut(d).and_then(|t| t["spec"].as_object_mut()) {
            spec.retain(|k, v| {
                !(["initContainers", "volumes"].contains(&k.as_str()) && v == &json!([]))
            });
        }
    }
    docs
}

fn injected(name: &str, input: &str) -> String {
    injected_with(name, input, &InjectorConfig::default())
}

fn injected_with(name: &str, input: &str, config: &InjectorConfig) -> String {
    let out = inject_str(input, config)
        .unwrap_or_else(|e| panic!("{name}: {}", migration_injector::error_chain(&e)));
    out.text
}

#[test]
fn fixtures_change_only_what_is_injected() {
    fixtures_change_only_what_is_injected_with(&InjectorConfig::default());
}

/// Run-once mode adds a label and a longer init container: the same properties hold.
#[test]
fn fixtures_in_run_once_mode_change_only_what_is_injected() {
    fixtures_change_only_what_is_injected_with(&InjectorConfig {
        run_mode: migration_injector::mutate::config::RunMode::Once,
        waiter_image: Some("ghcr.io/org/migration-injector:1.0.0".into()),
        ..InjectorConfig::default()
    });
}

fn fixtures_change_only_what_is_injected_with(config: &InjectorConfig) {
    for (name, input) in fixtures() {
        let output = injected_with(&name, &input, config);
        let before = read_str(&input).unwrap();
        let after = read_str(&output).unwrap();
        // Every annotated workload was mutated...
        assert_ne!(before, after, "{name}: nothing injected");
        // (a) ...and taking the injected items out gives back the input, as kubectl reads both.
        assert_eq!(normalise(after), normalise(before), "{name}");
        // (b) A second pass changes nothing, byte for byte.
        assert_eq!(
            injected_with(&name, &output, config),
            output,
            "{name}: not idempotent"
        );
        // (c) The line diff only adds lines, except where a flow collection (`[...]`, `{...}`)
        // that gained an item is rewritten in place, or the document is written anew.
        if WRITTEN_ANEW.contains(&name.as_str()) {
            continue;
        }
        let diff = TextDiff::from_lines(&input, &output);
        for change in diff.iter_all_changes() {
            if change.tag() == ChangeTag::Delete {
                let line = change.value();
                assert!(
                    line.contains('[') || line.contains('{'),
                    "{name}: a line that is not a flow collection changed: {line:?}\n{output}"
                );
            }
        }
        if !name.contains("flow") && !name.contains("json") && !name.contains("indented") {
            assert!(
                diff.iter_all_changes()
                    .all(|c| c.tag() != ChangeTag::Delete),
                "{name}: only additions expected\n{output}"
            );
        }
    }
}

#[test]
fn block_fixtures_keep_comments_and_yaml_1_1_scalars_as_written() {
    let (_, input) = fixtures()
        .into_iter()
        .find(|(n, _)| n == "install.yaml")
        .unwrap();
    let output = injected("install.yaml", &input);
    for kept in [
        "# The workload: existing init container, a native sidecar, volumes of every common kind.",
        "      # Waits for the database before anything else.",
        "  revisionHistoryLimit: 010      # octal: 8 for kubectl",
        "          defaultMode: 0755",
        "        - \"no\"",
        "          value: \"y\"",
        "        - \"1_000\"",
        "# trailing comment of the workload document",
    ] {
        assert!(output.contains(kept), "{kept:?} lost:\n{output}");
    }
    // The injected args hold YAML 1.1 look-alikes: quoted, so they stay strings.
    assert!(
        output.contains("        - 'on'\n        - --baseline\n        - '0755'\n"),
        "{output}"
    );
    let deployment = read_str(&output)
        .unwrap()
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap();
    let spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        spec["initContainers"][2]["args"],
        json!(["migrate", "apply", "--env", "on", "--baseline", "0755"])
    );
    assert_eq!(spec["initContainers"][1]["restartPolicy"], "Always");
    assert_eq!(spec["volumes"][1]["configMap"]["defaultMode"], 493);
    assert_eq!(deployment["spec"]["revisionHistoryLimit"], 8);
    assert_eq!(
        spec["containers"][0]["args"],
        json!(["--verbose", "no", "on", "1_000"])
    );
}

#[test]
fn merge_keys_are_applied_and_kept() {
    let input = std::fs::read_to_string("tests/fixtures/inject/anchors.yaml").unwrap();
    let docs = read_str(&input).unwrap();
    let spec = &docs[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    // `<<: *base` brings the anchored init container's fields into each container.
    assert_eq!(spec["containers"][0]["resources"]["requests"]["cpu"], "10m");
    assert_eq!(spec["containers"][0]["env"][1]["value"], "off");
    assert_eq!(spec["containers"][1]["image"], "alpine:3.20");
    assert_eq!(spec["containers"][1]["name"], "uploader");
    assert_eq!(docs[0]["spec"]["jobTemplate"]["spec"]["backoffLimit"], 3);
    let output = injected("anchors.yaml", &input);
    assert!(
        output.contains("<<: *base") && output.contains("&small"),
        "{output}"
    );
    let out = read_str(&output).unwrap();
    let spec = &out[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    // `migrations.io/position: first`: before the user's init container.
    assert_eq!(spec["initContainers"][0]["name"], "migrate");
    assert_eq!(spec["initContainers"][1]["name"], "fetch");
    assert_eq!(spec["containers"][1]["env"][0]["value"], "UTC");
}

#[test]
fn aliased_pod_spec_is_written_anew_with_a_warning() {
    let input = std::fs::read_to_string("tests/fixtures/inject/shared-template.yaml").unwrap();
    let out = inject_str(&input, &InjectorConfig::default()).unwrap();
    assert!(
        out.warnings.iter().any(|w| w.contains("written anew")),
        "{:?}",
        out.warnings
    );
    let docs = read_str(&out.text).unwrap();
    // The canary Deployment keeps the original pod spec: the anchor was not edited in place.
    assert!(docs[0]["items"][1]["spec"]["template"]["spec"]
        .get("initContainers")
        .is_none());
    assert_eq!(
        docs[0]["items"][0]["spec"]["template"]["spec"]["initContainers"][0]["name"],
        "migrate"
    );
    assert_eq!(
        docs[0]["items"][0]["spec"]["template"]["spec"]["containers"][0]["args"][2],
        "off"
    );
}

#[test]
fn refusals_name_the_document_from_1_and_the_line() {
    for (input, want) in [
        ("a: 1\n---\nb: [1\n", "document 2: line 4 column 1:"),
        (
            "a: 1\n---\n---\nb: .inf\n",
            "document 3: line 4: kubectl cannot convert .inf",
        ),
        ("a: *nope\n", "document 1: line 1 column 4:"),
        (
            "a: !!int x\n",
            "document 1: line 1: cannot decode `x` as a !!int",
        ),
        ("a:\n  <<: [1]\n", "document 1: line 2: map merge requires"),
    ] {
        let err = inject_str(input, &InjectorConfig::default()).unwrap_err();
        let text = migration_injector::error_chain(&err);
        assert!(text.starts_with(want), "{input:?}: {text}");
    }
    // A key written twice is what kubectl accepts (keeping the last): a warning, not an error.
    let out = inject_str("a: 1\na: 2\n", &InjectorConfig::default()).unwrap();
    assert_eq!(out.documents, vec![json!({"a": 2})]);
    assert!(
        out.warnings[0].contains("written twice"),
        "{:?}",
        out.warnings
    );
}

#[test]
fn unannotated_input_is_byte_identical() {
    for input in [
        "# only comments\n",
        "a: yes # kubectl reads true; left as written\n---\n--- {b: 0755}\n...\n",
        "\u{feff}apiVersion: v1\r\nkind: ConfigMap\r\nmetadata: {name: x}\r\n",
        "[1, 2]",
    ] {
        assert_eq!(injected("inline", input), input);
    }
}

/// kubectl's own reading, where kubectl is installed: `annotate --local` decodes the file as
/// `kubectl apply` does and prints the objects as the JSON it would send.
fn kubectl_reads(text: &str) -> Option<Vec<Value>> {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        return None;
    }
    let dir = tempfile::tempdir().ok()?;
    let path = dir.path().join("m.yaml");
    std::fs::write(&path, text).ok()?;
    let out = Command::new("kubectl")
        .args(["annotate", "--local", "-o", "json", "-f"])
        .arg(&path)
        .arg("oracle.test/x=1")
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "kubectl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One JSON object per object read, `List`s flattened.
    let mut items: Vec<Value> = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect();
    for item in &mut items {
        let annotations = item["metadata"]["annotations"].as_object_mut().unwrap();
        annotations.remove("oracle.test/x");
        if annotations.is_empty() {
            item["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("annotations");
        }
    }
    Some(items)
}

/// Our reading, with `List`s flattened as kubectl does.
fn flat(docs: Vec<Value>) -> Vec<Value> {
    docs.into_iter()
        .flat_map(|d| {
            if d["kind"] == "List" {
                d["items"].as_array().cloned().unwrap_or_default()
            } else {
                vec![d]
            }
        })
        .collect()
}

#[test]
fn kubectl_reads_fixtures_and_outputs_as_we_do() {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        eprintln!("kubectl not installed: the kubectl cross-check is skipped");
        return;
    }
    for (name, input) in fixtures() {
        let output = injected(&name, &input);
        for text in [&input, &output] {
            let Some(theirs) = kubectl_reads(text) else {
                continue;
            };
            assert_eq!(flat(read_str(text).unwrap()), theirs, "{name}");
        }
    }
}

/// A scalar written some YAML 1.1 way, with the value kubectl reads (worked out here, apart
/// from the implementation).
fn scalar() -> impl Strategy<Value = (String, Value)> {
    let bools = prop::sample::select(vec![
        ("y", true),
        ("Y", true),
        ("yes", true),
        ("Yes", true),
        ("YES", true),
        ("on", true),
        ("On", true),
        ("ON", true),
        ("true", true),
        ("True", true),
        ("TRUE", true),
        ("n", false),
        ("N", false),
        ("no", false),
        ("No", false),
        ("NO", false),
        ("off", false),
        ("Off", false),
        ("OFF", false),
        ("false", false),
        ("False", false),
        ("FALSE", false),
    ])
    .prop_map(|(t, b)| (t.to_owned(), json!(b)));
    let nulls = prop::sample::select(vec!["~", "null", "Null", "NULL"])
        .prop_map(|t| (t.to_owned(), Value::Null));
    let ints = (0i64..1_000_000, 0usize..6).prop_map(|(n, form)| {
        let text = match form {
            0 => n.to_string(),
            1 => format!("0x{n:X}"),
            2 => format!("0{n:o}"),
            3 => format!("0o{n:o}"),
            4 => format!("-{n}"),
            _ => {
                let s = n.to_string();
                let (a, b) = s.split_at(s.len() / 2);
                if a.is_empty() {
                    format!("{b}_")
                } else {
                    format!("{a}_{b}")
                }
            }
        };
        let value = if form == 4 { -n } else { n };
        // A leading 0 means octal: `0` alone, or octal digits after it, are integers.
        (text, json!(value))
    });
    let floats = (1u32..10_000, 1u32..100).prop_map(|(a, b)| {
        (
            format!("{a}.{b:02}"),
            json!(format!("{a}.{b:02}").parse::<f64>().unwrap()),
        )
    });
    let strings = prop::sample::select(vec![
        "1:20",
        "2001-12-14",
        "yEs",
        "0x",
        "1e",
        "-x",
        "--env",
        "=",
        "12h",
        "0.0.1",
        "_1x",
        "true1",
        "ON_OFF",
        "v1.2",
        "null0",
        ".",
        "+",
        "08x",
    ])
    .prop_map(|t| (t.to_owned(), json!(t)));
    let plain = prop_oneof![bools, nulls, ints, floats, strings];
    // Each plain form quoted is a string, whatever it looks like.
    (plain, 0usize..3).prop_map(|((text, value), quote)| match quote {
        1 => (format!("'{text}'"), json!(text)),
        2 => (format!("\"{text}\""), json!(text)),
        _ => (text, value),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Scalars in every YAML 1.1 form survive inject with the value kubectl reads, in the user's
    /// part (left as written) and in the injected part (the annotation's args, written by inject).
    #[test]
    fn scalars_survive_inject(values in prop::collection::vec(scalar(), 1..8)) {
        let env: String = values
            .iter()
            .enumerate()
            .map(|(i, (text, _))| format!("        - name: V{i}\n          value: {text}\n"))
            .collect();
        let args: Vec<String> = values.iter().map(|(t, _)| t.trim_matches(['\'', '"']).to_owned()).collect();
        let annotation = serde_json::to_string(&serde_json::to_string(&args).unwrap()).unwrap();
        let input = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n  annotations:\n    migrations.io/image: a:1\n    migrations.io/args: {annotation}\nspec:\n  template:\n    spec:\n      containers:\n      - name: c\n        image: c:1\n        env:\n{env}"
        );
        let output = injected("generated", &input);
        let read = |text: &str| read_str(text).unwrap().remove(0);
        for doc in [read(&input), read(&output)] {
            let spec = &doc["spec"]["template"]["spec"];
            for (i, (_, want)) in values.iter().enumerate() {
                prop_assert_eq!(&spec["containers"][0]["env"][i]["value"], want);
            }
        }
        prop_assert_eq!(&read(&output)["spec"]["template"]["spec"]["initContainers"][0]["args"], &json!(args));
        prop_assert_eq!(injected("generated", &output), output.clone());
        // Where kubectl is installed, it reads the same values from the input and the output.
        for text in [&input, &output] {
            if let Some(theirs) = kubectl_reads(text) {
                let env = &theirs[0]["spec"]["template"]["spec"]["containers"][0]["env"];
                for (i, (_, want)) in values.iter().enumerate() {
                    prop_assert_eq!(&env[i]["value"], want);
                }
            }
        }
    }
}

/// Re-running inject after the annotations changed (the UPDATE-like case): the injected container
/// is replaced or moved in the text, the user's items and comments stay, and a further run is
/// byte-identical.
#[test]
fn changed_annotations_update_the_injected_items_in_place() {
    let (_, input) = fixtures()
        .into_iter()
        .find(|(n, _)| n == "install.yaml")
        .unwrap();
    let first = injected("install.yaml", &input);
    let changed = first
        .replace(
            "    migrations.io/args: '[\"migrate\", \"apply\", \"--env\", \"on\", \"--baseline\", \"0755\"]'\n",
            "    migrations.io/args: '[\"migrate\", \"apply\", \"--env\", \"off\"]'\n",
        )
        .replace("shop-migrations:2.3.0", "shop-migrations:2.4.0");
    assert_ne!(changed, first);
    let second = injected("install.yaml", &changed);
    let doc = read_str(&second)
        .unwrap()
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap();
    let init = &doc["spec"]["template"]["spec"]["initContainers"];
    assert_eq!(init[2]["args"], json!(["migrate", "apply", "--env", "off"]));
    assert_eq!(init[2]["image"], "ghcr.io/example/shop-migrations:2.4.0");
    assert_eq!(init[0]["name"], "wait-for-db");
    assert!(
        second.contains("      - name: log-shipper       # a native sidecar\n"),
        "{second}"
    );
    assert_eq!(injected("install.yaml", &second), second);
    // Moving it first (Remove + Insert in the patch) is placed in the text too.
    let moved = second.replace(
        "    migrations.io/args: '[\"migrate\", \"apply\", \"--env\", \"off\"]'\n",
        "    migrations.io/position: first\n",
    );
    let out = inject_str(&moved, &InjectorConfig::default()).unwrap();
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let doc = read_str(&out.text)
        .unwrap()
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap();
    assert_eq!(
        doc["spec"]["template"]["spec"]["initContainers"][0]["name"],
        "migrate"
    );
    assert_eq!(injected("install.yaml", &out.text), out.text);
}
