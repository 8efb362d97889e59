//! `migration-injector certs generate`: a CA and a serving certificate for the webhook Service.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use migration_injector::tls::{service_dns_names, Ca};

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Generate a CA and a serving certificate for the webhook Service.
    Generate(CertsGenerateArgs),
}

#[derive(Debug, Args)]
pub struct CertsGenerateArgs {
    /// Name of the webhook's Service.
    #[arg(long, default_value = "migration-injector")]
    pub service: String,
    /// Namespace of the webhook's Service.
    #[arg(long, default_value = "migration-injector")]
    pub namespace: String,
    /// Directory to write ca.crt, tls.crt and tls.key into.
    #[arg(long)]
    pub out: PathBuf,
    /// Validity of the CA and the serving certificate, in days.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
    /// Extra IP address SANs (repeatable), e.g. 127.0.0.1 for a webhook reached by URL.
    #[arg(long = "ip")]
    pub ips: Vec<IpAddr>,
    /// Extra DNS name SANs (repeatable).
    #[arg(long = "dns")]
    pub dns: Vec<String>,
    /// Overwrite an existing tls.key.
    #[arg(long)]
    pub force: bool,
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
    let mut names = service_dns_names(&args.service, &args.namespace);
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
