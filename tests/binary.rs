//! The `migration-injector serve` binary itself: `--self-signed` with no set-up, flags from
//! env vars, and a clean exit on SIGTERM.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;

const CREATE: &str = include_str!("fixtures/create-deployment.json");

/// The value of one metric on the admin port's /metrics.
async fn metric(admin: u16, name: &str) -> i64 {
    let text = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no metric {name} in {text}"))
        .trim()
        .parse()
        .unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn self_signed_serve_answers_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.crt");
    let (port, admin) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_migration-injector"))
        .args(["serve", "--self-signed", "--self-signed-ca-out"])
        .arg(&ca_path)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        // The admin address and an injection default come from env vars, as the chart sets them.
        .env(
            "MIGRATION_INJECTOR_ADMIN_LISTEN",
            format!("127.0.0.1:{admin}"),
        )
        .env("MIGRATION_INJECTOR_DEFAULT_SECRET", "from-env")
        .env("MIGRATION_INJECTOR_SHUTDOWN_DELAY_SECONDS", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let admin_client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = admin_client
            .get(format!("http://127.0.0.1:{admin}/readyz"))
            .send()
            .await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "serve did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The served certificate's expiry is published, a year ahead for --self-signed.
    let expiry = metric(
        admin,
        "migration_injector_serving_certificate_not_after_seconds",
    )
    .await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        (now + 364 * 86_400..=now + 366 * 86_400).contains(&expiry),
        "{expiry} vs {now}"
    );

    let ca = std::fs::read_to_string(&ca_path).unwrap();
    let client = support::server::client_for(&ca, ([127, 0, 0, 1], port).into());
    // The certificate names both localhost and 127.0.0.1.
    for host in ["localhost", "127.0.0.1"] {
        let review: Value = client
            .post(format!("https://{host}:{port}/mutate?timeout=10s"))
            .header("content-type", "application/json")
            .body(CREATE)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        use base64::Engine as _;
        let patch = base64::engine::general_purpose::STANDARD
            .decode(review["response"]["patch"].as_str().unwrap())
            .unwrap();
        assert!(String::from_utf8(patch)
            .unwrap()
            .contains(r#""secretName":"from-env""#));
    }

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "exit status after SIGTERM: {exit:?}");
}

#[test]
fn bad_configuration_fails_at_start_with_the_flag_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_migration-injector"))
        .args([
            "serve",
            "--self-signed",
            "--default-pull-policy",
            "Sometimes",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--default-pull-policy")
            && stderr.contains("MIGRATION_INJECTOR_DEFAULT_PULL_POLICY"),
        "{stderr}"
    );
}

/// `--manage-ca-bundle` without a readable CA file stops at start (naming the flag and the
/// file), before any API call; `--tls-ca-file` alone is refused (it would do nothing).
#[test]
fn manage_ca_bundle_needs_its_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = migration_injector::tls::Ca::generate("test CA", 1).unwrap();
    let pair = ca.issue_server(&["localhost".to_owned()], &[], 1).unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &pair.cert_pem).unwrap();
    std::fs::write(&key, &pair.key_pem).unwrap();
    let missing = dir.path().join("ca.crt");
    let serve = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_migration-injector"))
            .arg("serve")
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--pod-name", "p"])
            .args(extra)
            .env_remove("MIGRATION_INJECTOR_MANAGE_CA_BUNDLE")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = missing.to_str().unwrap();
    let stderr = serve(&["--manage-ca-bundle", "--tls-ca-file", missing]);
    assert!(
        stderr.contains("--manage-ca-bundle") && stderr.contains(missing),
        "{stderr}"
    );
    let stderr = serve(&["--tls-ca-file", missing]);
    assert!(stderr.contains("--manage-ca-bundle"), "{stderr}");
    let stderr = serve(&["--manage-ca-bundle"]);
    assert!(stderr.contains("--tls-ca-file"), "{stderr}");
}

/// Issue 9: 24 clients that send most of a 6 MiB body and stall used to push the release build
/// past 200 MiB RSS. The memory budget turns most away with 503 at once; the server stays small
/// and keeps answering ordinary reviews.
#[tokio::test]
async fn stalled_large_bodies_stay_inside_the_memory_budget() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.crt");
    let (port, admin) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_migration-injector"))
        .args(["serve", "--self-signed", "--self-signed-ca-out"])
        .arg(&ca_path)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .env("MIGRATION_INJECTOR_SHUTDOWN_DELAY_SECONDS", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ca_path.exists() || std::fs::metadata(&ca_path).unwrap().len() == 0 {
        assert!(Instant::now() < deadline, "serve did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ca = std::fs::read_to_string(&ca_path).unwrap();
    let connector = support::server::tls_connector(&ca, &[]);
    let total = 6 * 1024 * 1024;
    let mut stallers = Vec::new();
    for _ in 0..24 {
        let connector = connector.clone();
        stallers.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            let head = format!("POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {total}\r\n\r\n");
            tls.write_all(head.as_bytes()).await.unwrap();
            let chunk = vec![b' '; 64 * 1024];
            // Most of the body, then silence (writes stop when the server stops reading).
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                for _ in 0..(6_000_000 / chunk.len()) {
                    if tls.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
            })
            .await;
            tokio::time::sleep(Duration::from_secs(8)).await;
            drop(tls);
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // An ordinary review is answered, quickly, while the stalled uploads hold their share.
    let client = support::server::client_for(&ca, ([127, 0, 0, 1], port).into());
    let started = Instant::now();
    let response = client
        .post(format!("https://localhost:{port}/mutate"))
        .header("content-type", "application/json")
        .body(CREATE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let review: Value = response.json().await.unwrap();
    assert!(review["response"]["patch"].is_string(), "{review}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    eprintln!(
        "server RSS with 24 stalled 6 MiB uploads: {} MiB",
        rss_kib / 1024
    );
    // The chart's memory limit is 128 MiB; the budget (32 MiB) plus the process is far below.
    assert!(rss_kib < 96 * 1024, "RSS {rss_kib} KiB");

    // The overload is visible to operators.
    let overloaded = metric(admin, "migration_injector_overloaded_requests_total").await;
    assert!(overloaded >= 20, "{overloaded}");

    for s in stallers {
        s.abort();
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    // Logs to a pipe carry no colour codes (kubectl logs would show them).
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(logs.contains("migration-injector serving"), "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "ANSI escapes in non-terminal logs: {logs:?}"
    );
}
