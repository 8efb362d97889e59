//! `serve`'s logging flags and the tracing subscriber they configure.

use std::io::IsTerminal;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log line format: `text` or `json` (one object per line).
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogArgs {
    /// Installs the global subscriber.
    pub fn init_tracing(&self) -> Result<()> {
        let level = &self.log_level;
        let filter =
            EnvFilter::try_new(level).with_context(|| format!("bad --log-level {level:?}"))?;
        // Colour only on a terminal: `kubectl logs` would show the escape codes.
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr);
        match self.log_format {
            LogFormat::Json => builder.json().flatten_event(true).init(),
            LogFormat::Text => builder.init(),
        }
        Ok(())
    }
}
