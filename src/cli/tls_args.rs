//! `serve`'s certificate flags: files (optionally keeping the caBundle), self-signed, or
//! self-managed in the cluster; turned into the library's [`CertSource`].

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use migration_injector::tls::managed_bundle::ManagedBundle;
use migration_injector::tls::self_managed::{BundleTarget, SelfManaged};
use migration_injector::tls::CertSource;

use super::check_interval::CheckInterval;

#[derive(Debug, Args)]
pub struct TlsArgs {
    /// PEM certificate (chain) served by the webhook; required unless --self-signed or
    /// --self-managed.
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
    /// Seconds between checks of the cert and key files: a new valid pair is swapped in without a
    /// restart.
    #[arg(long, env = "MIGRATION_INJECTOR_CERT_RELOAD_INTERVAL", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub cert_reload_interval: u64,
    /// With the TLS files (cert-manager's or your Secret): keep the caBundle of
    /// --webhook-config-name trusting the CA in --tls-ca-file, recorded per replica (--pod-name)
    /// as --self-managed does, and serve a certificate of a new CA only once the caBundle trusts
    /// it (instead of cert-manager's cainjector, which drops the old CA while old pods still
    /// serve it). Needs get/patch on that webhook configuration only.
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
    /// Generate an in-memory CA and a serving certificate for localhost and 127.0.0.1 (local
    /// runs; no env var, as a cluster install uses one of the other modes).
    #[arg(long, conflicts_with_all = ["tls_cert_file", "tls_key_file"])]
    pub self_signed: bool,
    /// With --self-signed: write the CA certificate (PEM) here, for the caBundle or a client.
    #[arg(long, requires = "self_signed")]
    pub self_signed_ca_out: Option<PathBuf>,
    /// Manage certificates in the cluster: one CA shared by the replicas through a Secret
    /// (create-if-absent), a serving certificate per replica renewed with a third of its life
    /// left, and the webhook configuration's caBundle kept current. Needs get/create on that
    /// Secret and get/patch on that webhook configuration only. (The env var takes true/false;
    /// conflicts with the TLS file flags are checked at start.)
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
    /// With --self-managed: validity in days of each serving certificate, renewed with a third
    /// left.
    #[arg(long, env = "MIGRATION_INJECTOR_SELF_MANAGED_CERT_DAYS", default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=825))]
    pub self_managed_cert_days: u32,
    #[command(flatten)]
    pub ca_bundle_check_interval: CheckInterval,
}

impl TlsArgs {
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
    pub fn cert_source(&self) -> Result<CertSource> {
        let check_interval = self.ca_bundle_check_interval.0;
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
                check_interval,
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
                check_interval,
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
}
