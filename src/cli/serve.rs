//! `migration-injector serve`: the flags, grouped by what they configure (each group in its
//! own module), wired to the library's certificate source and [`Server`].

use anyhow::{bail, Result};
use clap::Args;
use migration_injector::mutate::InjectorConfig;
use migration_injector::tls;
use migration_injector::webhook::runs::RunCache;
use migration_injector::webhook::{shutdown, Server, ServerOptions, Stopped};

use super::injection_args::InjectionArgs;
use super::limits_args::LimitsArgs;
use super::log_args::LogArgs;
use super::server_args::ServerArgs;
use super::tls_args::TlsArgs;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub limits: LimitsArgs,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub injection: InjectionArgs,
}

impl ServeArgs {
    fn options(&self) -> Result<ServerOptions> {
        Ok(ServerOptions {
            listen: self.server.listen,
            admin_listen: self.server.admin_listen,
            limits: self.limits.limits()?,
            grace: self.server.grace(),
            shutdown_delay: self.server.shutdown_delay(),
        })
    }
}

pub fn serve(args: ServeArgs) -> Result<()> {
    args.log.init_tracing()?;
    let source = args.tls.cert_source()?;
    let options = args.options()?;
    let run_status_cache = args.server.run_status_cache;
    let config = InjectorConfig::from(args.injection);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Certificates are ready before any socket binds, so a bad pair fails the start.
        let store = tls::start(source).await?;
        let server = Server::bind(config, store, options).await?;
        if run_status_cache {
            let client = kube::Client::try_default()
                .await
                .map_err(|e| anyhow::anyhow!("--run-status-cache needs the Kubernetes API: {e}"))?;
            server.state().set_runs(RunCache::start(client));
        }
        let (first, second) = shutdown::signals();
        match server.run(first, second).await {
            Stopped::Drained => Ok(()),
            Stopped::Aborted => bail!("stopped by a second signal before the drain finished"),
        }
    })
}
