//! `inject` is the webhook's mutation: same output for the same object, through the binary too.

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine as _;
use migration_injector::mutate::manifests::{inject_str, read_str, render};
use migration_injector::mutate::InjectorConfig;
use migration_injector::webhook::review::review;
use serde_json::{json, Value};

fn webhook(object: &Value, group: &str, version: &str, kind: &str) -> Value {
    let body = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "1", "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": "x"},
            "operation": "CREATE", "userInfo": {}, "object": object}
    });
    let reviewed = review(body.to_string().as_bytes(), &InjectorConfig::default()).unwrap();
    let answer: Value = serde_json::from_slice(&reviewed.body).unwrap();
    let mut out = object.clone();
    if let Some(p) = answer["response"]["patch"].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut out, &patch).unwrap();
    }
    out
}

#[test]
fn webhook_patch_equals_inject_output() {
    let examples = std::fs::read_to_string("manifests/examples/deployment.yaml").unwrap();
    let cronjob = r#"
apiVersion: batch/v1beta1
kind: CronJob
metadata:
  name: nightly
  annotations: {migrations.io/image: "ghcr.io/org/m:1", migrations.io/position: first}
spec:
  schedule: "0 0 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          initContainers: [{name: wait, image: "busybox:1"}]
          containers: [{name: job, image: "job:1"}]
"#;
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","annotations":{"migrations.io/image":"ghcr.io/org/m:2"}},"spec":{"containers":[{"name":"c","image":"c:1"}]}}"#;
    for input in [examples.as_str(), cronjob, pod] {
        let injected = inject_str(input, &InjectorConfig::default()).unwrap();
        let original = read_str(input).unwrap().remove(0);
        let api_version = original["apiVersion"].as_str().unwrap();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let via_webhook = webhook(
            &original,
            group,
            version,
            original["kind"].as_str().unwrap(),
        );
        assert_ne!(via_webhook, original, "the example must be mutated");
        assert_eq!(injected.documents, vec![via_webhook]);
    }
}

#[test]
fn unchanged_documents_keep_their_text() {
    let input = "# the app's config\napiVersion: v1\nkind: ConfigMap   # odd spacing kept\nmetadata: {name: cm}\ndata:\n  z: '1'\n  a: \"2\"\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, annotations: {migrations.io/image: 'a:1'}}\nspec: {template: {spec: {containers: []}}}\n";
    let out = inject_str(input, &InjectorConfig::default()).unwrap();
    let text = render(&out).unwrap();
    let first = text.split("---\n").next().unwrap();
    assert_eq!(first, "# the app's config\napiVersion: v1\nkind: ConfigMap   # odd spacing kept\nmetadata: {name: cm}\ndata:\n  z: '1'\n  a: \"2\"\n");
    assert!(text.contains("name: migrate"), "{text}");
    // A separator with content on its line falls back to parsing the whole input.
    let inline = "--- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n--- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n";
    let out = inject_str(inline, &InjectorConfig::default()).unwrap();
    assert_eq!(out.documents.len(), 2);
}

#[test]
fn lists_and_other_documents() {
    let input = r#"
apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: StatefulSet
  metadata: {name: s, annotations: {migrations.io/image: "ghcr.io/org/m:1"}}
  spec: {selector: {matchLabels: {a: b}}, serviceName: s, template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: "c:1"}]}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm, annotations: {migrations.io/image: "ghcr.io/org/m:1"}}
data: {a: b}
---
"#;
    let out = inject_str(input, &InjectorConfig::default()).unwrap();
    assert_eq!(out.documents.len(), 2);
    assert_eq!(
        out.documents[0]["items"][0]["spec"]["template"]["spec"]["initContainers"][0]["name"],
        "migrate"
    );
    assert_eq!(out.documents[1]["data"], json!({"a": "b"}));
    let text = render(&out).unwrap();
    assert!(text.contains("\n---\n"));
    // Read back as kubectl reads it (the trailing empty document is kept, and is no object).
    assert_eq!(read_str(&text).unwrap(), out.documents);
    assert!(text.ends_with("---\n"), "{text}");
}

fn run_cli(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_migration-injector"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_on_the_examples_and_on_bad_annotations() {
    let (code, stdout, _) = run_cli(&["inject", "-f", "manifests/examples/"], "");
    assert_eq!(code, 0);
    assert!(
        stdout.contains("name: migrate") && stdout.contains("kind: Secret"),
        "{stdout}"
    );

    let bad = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x, annotations: {migrations.io/image: 'a:1', migrations.io/pull-policy: Sometimes}}\nspec: {template: {spec: {containers: []}}}\n";
    let (code, stdout, stderr) = run_cli(&["inject", "-f", "-"], bad);
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert_eq!(
        stderr.trim(),
        r#"error: stdin: document 1 at line 1 (Deployment "x"): annotation migrations.io/pull-policy="Sometimes" is not an image pull policy; fix: use Always, IfNotPresent or Never"#
    );

    // Flags set cluster defaults, exactly as for serve.
    let ok = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x, annotations: {migrations.io/image: 'a:1'}}\nspec: {template: {spec: {containers: []}}}\n";
    let (code, _, stderr) = run_cli(
        &[
            "inject",
            "-f",
            "-",
            "--allowed-image-prefixes",
            "ghcr.io/org/",
        ],
        ok,
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("outside the allowed registries"),
        "{stderr}"
    );
    let (code, stdout, _) = run_cli(&["inject", "-f", "-", "--default-secret", "cluster-db"], ok);
    assert_eq!(code, 0);
    assert!(stdout.contains("secretName: cluster-db"), "{stdout}");
}
