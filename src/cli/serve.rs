//! `migration-injector serve`: flags to the library's certificate source and [`Server`].

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use migration_injector::mutate::InjectorConfig;
use migration_injector::tls::managed_bundle::ManagedBundle;
use migration_injector::tls::self_managed::{BundleTarget, SelfManaged};
use migration_injector::tls::{self, CertSource};
use migration_injector::webhook::{shutdown, Limits, Server, ServerOptions, Stopped};
use tracing_subscriber::EnvFilter;

use super::injection_args::InjectionArgs;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the HTTPS webhook endpoint.
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_LISTEN",
        default_value = "0.0.0.0:8443"
    )]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP admin endpoint (/healthz, /readyz, /metrics).
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_ADMIN_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub admin_listen: SocketAddr,
    /// PEM certificate (chain) served by the webhook.
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_TLS_CERT_FILE",
        required_unless_present_any = ["self_signed", "self_managed"],
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the served certificate.
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_TLS_KEY_FILE",
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,
    /// With the TLS files: keep the caBundle of --webhook-config-name trusting the CA in
    /// --tls-ca-file, recorded per replica (--pod-name) as --self-managed does, and serve a
    /// certificate of a new CA only once the caBundle trusts it (instead of cert-manager's
    /// cainjector, which drops the old CA while old pods still serve it).
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_MANAGE_CA_BUNDLE",
        num_args = 0..=1,
        default_value_t = false,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub manage_ca_bundle: bool,
    /// With --manage-ca-bundle: PEM of the CA that signed the served certificate (a
    /// kubernetes.io/tls Secret's ca.crt).
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_TLS_CA_FILE",
        requires = "manage_ca_bundle"
    )]
    pub tls_ca_file: Option<PathBuf>,
    /// Generate an in-memory CA and a serving certificate for localhost and 127.0.0.1.
    #[arg(long, conflicts_with_all = ["tls_cert_file", "tls_key_file"])]
    pub self_signed: bool,
    /// With --self-signed: write the CA certificate (PEM) here, for the caBundle or a client.
    #[arg(long, requires = "self_signed")]
    pub self_signed_ca_out: Option<PathBuf>,
    /// Manage certificates in the cluster: one CA shared by all replicas through a Secret, a
    /// serving certificate per replica, and the webhook configuration's caBundle kept current.
    /// (The env var takes true/false; conflicts with the TLS file flags are checked at start.)
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_SELF_MANAGED",
        num_args = 0..=1,
        default_value_t = false,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub self_managed: bool,
    /// With --self-managed: the namespace of the webhook's Service and CA Secret.
    #[arg(long, env = "MIGRATION_INJECTOR_NAMESPACE")]
    pub namespace: Option<String>,
    /// With --self-managed: the webhook's Service, for the certificate's DNS names.
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_SERVICE_NAME",
        default_value = "migration-injector"
    )]
    pub service_name: String,
    /// With --self-managed: the Secret holding the shared CA.
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_CA_SECRET_NAME",
        default_value = "migration-injector-self-managed-ca"
    )]
    pub ca_secret_name: String,
    /// With --self-managed or --manage-ca-bundle: the MutatingWebhookConfiguration whose
    /// caBundle is kept current.
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_WEBHOOK_CONFIG_NAME",
        default_value = "migration-injector"
    )]
    pub webhook_config_name: String,
    /// With --self-managed: extra IP addresses for the serving certificate (comma-separated).
    #[arg(long, env = "MIGRATION_INJECTOR_CERT_IPS", value_delimiter = ',')]
    pub cert_ips: Vec<IpAddr>,
    /// With --self-managed or --manage-ca-bundle: this replica's unique name (the pod name;
    /// default: $HOSTNAME), under which it records on the webhook configuration the CAs it needs
    /// trusted.
    #[arg(long, env = "MIGRATION_INJECTOR_POD_NAME")]
    pub pod_name: Option<String>,
    /// With --self-managed: validity of each serving certificate, renewed with a third left.
    #[arg(long, env = "MIGRATION_INJECTOR_SELF_MANAGED_CERT_DAYS", default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=825))]
    pub self_managed_cert_days: u32,
    /// With --self-managed or --manage-ca-bundle: seconds between checks of the caBundle (and,
    /// self-managed, of the certificate's age).
    #[arg(long, env = "MIGRATION_INJECTOR_SELF_MANAGED_CHECK_INTERVAL", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub self_managed_check_interval: u64,
    /// Seconds between checks of the cert and key files for a rotation.
    #[arg(long, env = "MIGRATION_INJECTOR_CERT_RELOAD_INTERVAL", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub cert_reload_interval: u64,
    /// Largest request body accepted (an AdmissionReview holds object and oldObject).
    #[arg(long, env = "MIGRATION_INJECTOR_MAX_BODY_BYTES", default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Seconds allowed to receive a request body and answer.
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_REQUEST_TIMEOUT_SECONDS",
        default_value_t = 10
    )]
    pub request_timeout_seconds: u64,
    /// Seconds to drain in-flight requests after SIGTERM.
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_SHUTDOWN_GRACE_SECONDS",
        default_value_t = 25
    )]
    pub shutdown_grace_seconds: u64,
    /// Connections served at once by the webhook port; more are refused.
    #[arg(long, env = "MIGRATION_INJECTOR_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    /// Request-body bytes held at once across all requests; beyond it, requests get 503 with
    /// Retry-After at once. At least twice --max-body-bytes.
    #[arg(long, env = "MIGRATION_INJECTOR_MEMORY_BUDGET_BYTES", default_value_t = Limits::default().memory_budget_bytes)]
    pub memory_budget_bytes: usize,
    /// Seconds a connection may stay open with no request in flight (HTTP/2 PINGs do not count).
    /// Keep it above the API server's idle timeout for webhook connections (90 s).
    #[arg(long, env = "MIGRATION_INJECTOR_IDLE_TIMEOUT_SECONDS", default_value_t = Limits::default().idle_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_seconds: u64,
    /// HTTP/2 streams (concurrent requests) per connection.
    #[arg(long, env = "MIGRATION_INJECTOR_MAX_CONCURRENT_STREAMS", default_value_t = Limits::default().max_concurrent_streams, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_concurrent_streams: u32,
    /// Seconds between failing readiness on SIGTERM and closing the listener, so Service
    /// endpoints drop the replica before it stops accepting.
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_SHUTDOWN_DELAY_SECONDS",
        default_value_t = 5
    )]
    pub shutdown_delay_seconds: u64,
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// tracing filter, such as `info` or `migration_injector=debug`.
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_LOG_LEVEL",
        default_value = "info,rustls=error"
    )]
    pub log_level: String,
    #[command(flatten)]
    pub injection: InjectionArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn init_tracing(format: LogFormat, level: &str) -> Result<()> {
    let filter = EnvFilter::try_new(level).with_context(|| format!("bad --log-level {level:?}"))?;
    // Colour only on a terminal: `kubectl logs` would show the escape codes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

impl ServeArgs {
    /// This replica's name for its record on the webhook configuration. A shared name would let
    /// replicas overwrite each other's record of the CAs they need, so there is no made-up default.
    fn replica(&self, flag: &str) -> Result<String> {
        self.pod_name
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|n| !n.is_empty())
            .with_context(|| {
                format!("{flag} needs --pod-name (or $HOSTNAME): a name unique among the replicas")
            })
    }

    /// The certificate source the flags choose; conflicting flags are refused.
    fn cert_source(&self) -> Result<CertSource> {
        if self.self_managed {
            if self.self_signed || self.tls_cert_file.is_some() || self.tls_key_file.is_some() {
                bail!("--self-managed manages the certificate itself: drop --self-signed, --tls-cert-file and --tls-key-file");
            }
            if self.manage_ca_bundle {
                bail!("--self-managed keeps the caBundle itself: drop --manage-ca-bundle");
            }
            return Ok(CertSource::SelfManaged {
                config: SelfManaged {
                    namespace: self
                        .namespace
                        .clone()
                        .context("--self-managed needs --namespace")?,
                    service: self.service_name.clone(),
                    ca_secret: self.ca_secret_name.clone(),
                    webhook_config: self.webhook_config_name.clone(),
                    extra_ips: self.cert_ips.clone(),
                    cert_days: self.self_managed_cert_days,
                    replica: self.replica("--self-managed")?,
                },
                check_interval: Duration::from_secs(self.self_managed_check_interval),
            });
        }
        if self.self_signed {
            if self.manage_ca_bundle {
                bail!("--manage-ca-bundle works with --tls-cert-file/--tls-key-file/--tls-ca-file, not --self-signed");
            }
            return Ok(CertSource::SelfSigned {
                ca_out: self.self_signed_ca_out.clone(),
            });
        }
        let (Some(cert), Some(key)) = (self.tls_cert_file.clone(), self.tls_key_file.clone())
        else {
            bail!("give --tls-cert-file and --tls-key-file, --self-signed or --self-managed");
        };
        let managed_bundle = if self.manage_ca_bundle {
            Some(ManagedBundle {
                target: BundleTarget {
                    webhook_config: self.webhook_config_name.clone(),
                    replica: self.replica("--manage-ca-bundle")?,
                },
                ca_file: self.tls_ca_file.clone().context(
                    "--manage-ca-bundle needs --tls-ca-file: the CA that signed the served certificate (the Secret's ca.crt)",
                )?,
                check_interval: Duration::from_secs(self.self_managed_check_interval),
            })
        } else {
            None
        };
        Ok(CertSource::Files {
            cert,
            key,
            reload_interval: Duration::from_secs(self.cert_reload_interval),
            managed_bundle,
        })
    }

    fn options(&self) -> Result<ServerOptions> {
        if self.memory_budget_bytes < 2 * self.max_body_bytes {
            bail!(
                "--memory-budget-bytes ({}) must be at least twice --max-body-bytes ({}), so a largest review always fits",
                self.memory_budget_bytes,
                self.max_body_bytes
            );
        }
        Ok(ServerOptions {
            listen: self.listen,
            admin_listen: self.admin_listen,
            limits: Limits {
                max_body_bytes: self.max_body_bytes,
                request_timeout: Duration::from_secs(self.request_timeout_seconds),
                max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
                memory_budget_bytes: self.memory_budget_bytes,
                idle_timeout: Duration::from_secs(self.idle_timeout_seconds),
                max_concurrent_streams: self.max_concurrent_streams,
                ..Limits::default()
            },
            grace: Duration::from_secs(self.shutdown_grace_seconds),
            shutdown_delay: Duration::from_secs(self.shutdown_delay_seconds),
        })
    }
}

pub fn serve(args: ServeArgs) -> Result<()> {
    init_tracing(args.log_format, &args.log_level)?;
    let source = args.cert_source()?;
    let options = args.options()?;
    let config = InjectorConfig::from(args.injection);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Certificates are ready before any socket binds, so a bad pair fails the start.
        let store = tls::start(source).await?;
        let server = Server::bind(config, store, options).await?;
        let (first, second) = shutdown::signals();
        match server.run(first, second).await {
            Stopped::Drained => Ok(()),
            Stopped::Aborted => bail!("stopped by a second signal before the drain finished"),
        }
    })
}
