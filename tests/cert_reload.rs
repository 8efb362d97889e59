//! Certificate rotation under load: the serving certificate changes on disk several times,
//! including by the Secret-volume `..data` symlink swap kubelet performs, while concurrent HTTPS
//! requests run. No request may fail, new connections must see the new certificate, and a
//! half-written pair must keep the old one.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use migration_injector::mutate::InjectorConfig;
use migration_injector::tls::{self, CertFiles, CertStore};
use migration_injector::tls::{Ca, PemPair};
use migration_injector::webhook::Limits;
use rustls::pki_types::{CertificateDer, ServerName};
use support::server::TestServer;

const CREATE: &str = include_str!("fixtures/create-deployment.json");

/// A directory laid out like a mounted Secret: tls.crt -> ..data/tls.crt, ..data -> ..<version>.
struct SecretVolume {
    dir: PathBuf,
    version: usize,
}

impl SecretVolume {
    fn new(dir: &Path, pair: &PemPair) -> Self {
        let mut v = SecretVolume {
            dir: dir.to_owned(),
            version: 0,
        };
        v.swap(pair);
        std::os::unix::fs::symlink("..data/tls.crt", dir.join("tls.crt")).unwrap();
        std::os::unix::fs::symlink("..data/tls.key", dir.join("tls.key")).unwrap();
        v
    }

    /// What kubelet does: write a new timestamped directory, point a temporary symlink at it,
    /// and rename that over `..data` (atomic), then remove the old directory.
    fn swap(&mut self, pair: &PemPair) {
        self.version += 1;
        let name = format!("..2026_11_25_{:02}", self.version);
        let new = self.dir.join(&name);
        std::fs::create_dir(&new).unwrap();
        std::fs::write(new.join("tls.crt"), &pair.cert_pem).unwrap();
        std::fs::write(new.join("tls.key"), &pair.key_pem).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if self.version > 1 {
            let old = self
                .dir
                .join(format!("..2026_11_25_{:02}", self.version - 1));
            std::fs::remove_dir_all(old).unwrap();
        }
    }
}

fn serial_of_pem(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    serial_of_der(&der)
}

fn serial_of_der(der: &CertificateDer<'_>) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    cert.raw_serial().to_vec()
}

/// The serial of the certificate a brand-new TLS connection is served.
async fn served_serial(addr: std::net::SocketAddr, ca_pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    serial_of_der(&tls.get_ref().1.peer_certificates().unwrap()[0])
}

async fn wait_for_serial(addr: std::net::SocketAddr, ca_pem: &str, want: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while served_serial(addr, ca_pem).await != want {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn issue(ca: &Ca) -> PemPair {
    ca.issue_server(&["localhost".into()], &["127.0.0.1".parse().unwrap()], 1)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate("rotation CA", 1).unwrap();
    let first = issue(&ca);
    let mut volume = SecretVolume::new(dir.path(), &first);
    let mut files = CertFiles::new(dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let store = CertStore::new(files.reload().unwrap().unwrap());
    let ca_pem = ca.cert_pem();
    let server = TestServer::start_with(
        InjectorConfig::default(),
        Limits::default(),
        ca,
        store.clone(),
    )
    .await;
    let watcher = tokio::spawn(tls::watch(files, store.clone(), Duration::from_millis(25)));
    let addr = server.addr;

    // Load: concurrent workers, half on fresh connections (each request a new handshake, so
    // they meet every rotation), half on kept-alive ones.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for i in 0..8 {
        let mut builder = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
            .resolve("localhost", addr)
            .use_rustls_tls();
        if i % 2 == 0 {
            builder = builder.pool_max_idle_per_host(0);
        }
        let client = builder.build().unwrap();
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let url = format!("https://localhost:{}/mutate", addr.port());
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            // Bounded: at most 400 requests per worker.
            while !stop.load(Ordering::Relaxed) && n < 400 {
                n += 1;
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(CREATE)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("request failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }

    assert_eq!(
        served_serial(addr, &ca_pem).await,
        serial_of_pem(&first.cert_pem)
    );
    let ca = &server.ca;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let next = issue(ca);
        volume.swap(&next);
        wait_for_serial(addr, &ca_pem, &serial_of_pem(&next.cert_pem)).await;
    }

    // A half-written rotation (new certificate, old key) keeps the current pair...
    let current = serial_of_pem(&std::fs::read_to_string(dir.path().join("tls.crt")).unwrap());
    let half = issue(ca);
    let data = dir.path().join("..data");
    let target = std::fs::read_link(&data).unwrap();
    std::fs::write(dir.path().join(&target).join("tls.crt"), &half.cert_pem).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        served_serial(addr, &ca_pem).await,
        current,
        "a mismatched pair must not be served"
    );
    // ...and the completed pair is taken.
    std::fs::write(dir.path().join(&target).join("tls.key"), &half.key_pem).unwrap();
    wait_for_serial(addr, &ca_pem, &serial_of_pem(&half.cert_pem)).await;

    // Plain files rewritten in place (no symlinks) are picked up as well.
    let plain = tempfile::tempdir().unwrap();
    let direct = issue(ca);
    std::fs::write(plain.path().join("tls.crt"), &direct.cert_pem).unwrap();
    std::fs::write(plain.path().join("tls.key"), &direct.key_pem).unwrap();
    let mut plain_files =
        CertFiles::new(plain.path().join("tls.crt"), plain.path().join("tls.key"));
    assert!(plain_files.reload().unwrap().is_some());
    assert!(
        plain_files.reload().unwrap().is_none(),
        "unchanged files are not reloaded"
    );
    let rewritten = issue(ca);
    std::fs::write(plain.path().join("tls.crt"), &rewritten.cert_pem).unwrap();
    std::fs::write(plain.path().join("tls.key"), &rewritten.key_pem).unwrap();
    assert!(plain_files.reload().unwrap().is_some());

    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    watcher.abort();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{ok} requests succeeded during rotation");
    assert!(ok > 100, "the load was too light to prove anything: {ok}");
    assert_eq!(failed, 0, "requests failed during rotation");
    server.stop().await;
}

#[test]
fn bad_pairs_are_refused_with_a_reason() {
    let ca = Ca::generate("ca", 1).unwrap();
    let a = issue(&ca);
    let b = issue(&ca);
    let err = tls::certified_key(a.cert_pem.as_bytes(), b.key_pem.as_bytes(), "x").unwrap_err();
    assert!(
        err.to_string().contains("do not form a usable pair"),
        "{err}"
    );
    let err = tls::certified_key(b"", a.key_pem.as_bytes(), "x").unwrap_err();
    assert!(
        err.to_string().contains("no usable PEM certificate"),
        "{err}"
    );
    let err =
        tls::certified_key(a.cert_pem.as_bytes(), &a.key_pem.as_bytes()[..40], "x").unwrap_err();
    assert!(err.to_string().contains("private key"), "{err}");
}

#[test]
fn expired_or_future_pairs_are_not_loaded() {
    let ca = Ca::generate("ca", 1).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    for (from, to) in [(now - day * 2, now - day), (now + day, now + day * 2)] {
        let pair = ca
            .issue_server_between(&["localhost".into()], &[], from, to)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tls.crt"), &pair.cert_pem).unwrap();
        std::fs::write(dir.path().join("tls.key"), &pair.key_pem).unwrap();
        let mut files = CertFiles::new(dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let err = files.reload().unwrap_err().to_string();
        assert!(err.contains("not valid now"), "{err}");
    }
}

#[test]
fn readiness_needs_an_unexpired_certificate() {
    let store = CertStore::default();
    assert!(!store.is_valid());
    let ca = Ca::generate("ca", 1).unwrap();
    let pair = issue(&ca);
    store.set(tls::certified_key(pair.cert_pem.as_bytes(), pair.key_pem.as_bytes(), "x").unwrap());
    assert!(store.is_valid());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let expiry = store.not_after().unwrap();
    assert!(
        expiry > now && expiry <= now + 86_400 + 60,
        "{expiry} vs {now}"
    );
}
