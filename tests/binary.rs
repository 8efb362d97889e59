//! The `migration-injector serve` binary itself: `--self-signed` with no set-up, flags from
//! env vars, and a clean exit on SIGTERM.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const CREATE: &str = include_str!("fixtures/create-deployment.json");

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
    let metrics = admin_client
        .get(format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let expiry: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("migration_injector_serving_certificate_not_after_seconds "))
        .expect("expiry gauge")
        .trim()
        .parse()
        .unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        (now + 364 * 86_400..=now + 366 * 86_400).contains(&expiry),
        "{expiry} vs {now}"
    );

    let ca = std::fs::read_to_string(&ca_path).unwrap();
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .use_rustls_tls()
        .build()
        .unwrap();
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
