//! The binary's edge: wiring CLI arguments to the library, with anyhow errors.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use migration_injector::certs::{self, Ca};
use migration_injector::cli::{CertsCommand, InjectArgs, LogFormat, ServeArgs};
use migration_injector::selfmanaged::{self, SelfManaged};
use migration_injector::server::{self, AppState, Limits};
use migration_injector::tls::{self, CertFiles, CertStore};
use migration_injector::{inject as injector, metrics};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing_subscriber::EnvFilter;

fn init_tracing(format: LogFormat, level: &str) -> Result<()> {
    let filter = EnvFilter::try_new(level).with_context(|| format!("bad --log-level {level:?}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

pub fn serve(args: ServeArgs) -> Result<()> {
    init_tracing(args.log_format, &args.log_level)?;
    let config = args.injection.clone().into_config()?;
    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
        request_timeout: Duration::from_secs(args.request_timeout_seconds),
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        ..Limits::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Certificates are ready before any socket binds, so a bad pair fails the start.
        let (store, files) = if args.self_managed {
            if args.self_signed || args.tls_cert_file.is_some() || args.tls_key_file.is_some() {
                bail!("--self-managed manages the certificate itself: drop --self-signed, --tls-cert-file and --tls-key-file");
            }
            let cfg = SelfManaged {
                namespace: args.namespace.clone().context("--self-managed needs --namespace")?,
                service: args.service_name.clone(),
                ca_secret: args.ca_secret_name.clone(),
                webhook_config: args.webhook_config_name.clone(),
                extra_ips: args.cert_ips.clone(),
                cert_days: args.self_managed_cert_days,
            };
            let client = kube::Client::try_default().await.context("connecting to the Kubernetes API for --self-managed")?;
            let (ca, store) = selfmanaged::bootstrap(&client, &cfg).await?;
            tokio::spawn(selfmanaged::maintain(
                client,
                cfg,
                ca,
                store.clone(),
                Duration::from_secs(args.self_managed_check_interval),
            ));
            (store, None)
        } else if args.self_signed {
            let ca = Ca::generate("migration-injector self-signed CA", 365)?;
            let pair = ca.issue_server(&["localhost".to_owned()], &["127.0.0.1".parse()?, "::1".parse()?], 365)?;
            if let Some(path) = &args.self_signed_ca_out {
                std::fs::write(path, ca.cert_pem()).with_context(|| format!("writing the CA to {}", path.display()))?;
                eprintln!("wrote the self-signed CA to {}", path.display());
            }
            let key = tls::certified_key(pair.cert_pem.as_bytes(), pair.key_pem.as_bytes(), "self-signed pair")?;
            (CertStore::new(key), None)
        } else {
            let (Some(cert), Some(key)) = (args.tls_cert_file.clone(), args.tls_key_file.clone()) else {
                bail!("give --tls-cert-file and --tls-key-file, --self-signed or --self-managed");
            };
            let mut files = CertFiles::new(cert, key);
            let loaded = files.reload()?.context("no certificate loaded")?;
            (CertStore::new(loaded), Some(files))
        };
        metrics::record_cert(&store);
        let tls_config = tls::server_config(store.clone())?;
        let state = AppState::new(config, limits.clone(), store.clone());
        let listener = TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        let admin = TcpListener::bind(args.admin_listen).await.with_context(|| format!("binding {}", args.admin_listen))?;
        tracing::info!(listen = %listener.local_addr()?, admin = %admin.local_addr()?, "migration-injector serving");
        if let Some(files) = files {
            tokio::spawn(tls::watch(files, store.clone(), Duration::from_secs(args.cert_reload_interval)));
        }
        let grace = Duration::from_secs(args.shutdown_grace_seconds);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let signal_state = state.clone();
        let shutdown_delay = Duration::from_secs(args.shutdown_delay_seconds);
        tokio::spawn(async move {
            server::shutdown_signal().await;
            // Fail readiness first and keep serving while endpoints catch up, so the API server
            // is not refused by a replica it still routes to; then stop accepting and drain.
            signal_state.accepting.store(false, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(shutdown_delay).await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let webhook = server::serve(
            listener,
            Some(TlsAcceptor::from(tls_config)),
            server::router(state.clone()),
            limits.clone(),
            stopped(stop_rx.clone()),
            grace,
        );
        let admin = server::serve(admin, None, server::admin_router(state), limits, stopped(stop_rx), grace);
        tokio::join!(webhook, admin);
        tracing::info!("stopped");
        Ok(())
    })
}

pub fn inject(args: InjectArgs) -> Result<()> {
    let config = args.injection.into_config()?;
    let input = if args.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading stdin")?;
        s
    } else if args.file.is_dir() {
        // A directory: its .yaml, .yml and .json files, in name order.
        let mut paths: Vec<_> = std::fs::read_dir(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
            })
            .collect();
        paths.sort();
        let mut s = String::new();
        for p in paths {
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            s.push_str("---\n");
            s.push_str(&text);
            s.push('\n');
        }
        s
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?
    };
    let injected = injector::inject_str(&input, &config)?;
    for w in &injected.warnings {
        eprintln!("warning: {w}");
    }
    let out = injector::render(&injected)?;
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .context("writing stdout")?;
    Ok(())
}

pub fn certs(cmd: CertsCommand) -> Result<()> {
    let CertsCommand::Generate(args) = cmd;
    let key_path = args.out.join("tls.key");
    if key_path.exists() && !args.force {
        bail!(
            "{} exists; refusing to overwrite a live key (use --force)",
            key_path.display()
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let ca = Ca::generate(&format!("{} webhook CA", args.service), args.days)?;
    let mut names = certs::service_dns_names(&args.service, &args.namespace);
    names.extend(args.dns.iter().cloned());
    let pair = ca.issue_server(&names, &args.ips, args.days)?;
    write_file(&args.out.join("ca.crt"), ca.cert_pem().as_bytes(), 0o644)?;
    write_file(&args.out.join("tls.crt"), pair.cert_pem.as_bytes(), 0o644)?;
    write_file(&key_path, pair.key_pem.as_bytes(), 0o600)?;
    use base64::Engine as _;
    println!(
        "{}",
        base64::engine::general_purpose::STANDARD.encode(ca.cert_pem())
    );
    eprintln!(
        "wrote ca.crt, tls.crt and tls.key (0600) to {}; the line above is the caBundle",
        args.out.display()
    );
    Ok(())
}

fn write_file(path: &std::path::Path, data: &[u8], mode: u32) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    f.write_all(data)?;
    Ok(())
}
