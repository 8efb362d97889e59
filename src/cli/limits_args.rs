//! `serve`'s bounds on what clients can make the server hold: the flags of [`Limits`].

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use migration_injector::webhook::Limits;

#[derive(Debug, Args)]
pub struct LimitsArgs {
    /// Largest request body accepted: a review carries object and oldObject, each up to etcd's
    /// 1.5 MiB, larger as JSON.
    #[arg(long, env = "MIGRATION_INJECTOR_MAX_BODY_BYTES", default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Request-body bytes held at once across all requests; a request that does not fit gets 503
    /// with `Retry-After: 1` at once. Bodies over 1 MiB share half of it. At least twice
    /// --max-body-bytes.
    #[arg(long, env = "MIGRATION_INJECTOR_MEMORY_BUDGET_BYTES", default_value_t = Limits::default().memory_budget_bytes)]
    pub memory_budget_bytes: usize,
    /// Seconds allowed to receive a request body and answer.
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_REQUEST_TIMEOUT_SECONDS",
        default_value_t = 10
    )]
    pub request_timeout_seconds: u64,
    /// Connections served at once by the webhook port; at the cap the longest-idle connection is
    /// asked to close to make room, otherwise the new one is refused.
    #[arg(long, env = "MIGRATION_INJECTOR_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    /// Seconds a connection may stay open with no request in flight (HTTP/2 PINGs do not count);
    /// then it is closed (HTTP/2 GOAWAY). Keep it above the API server's own 90 s, so the API
    /// server closes first and never races a request.
    #[arg(long, env = "MIGRATION_INJECTOR_IDLE_TIMEOUT_SECONDS", default_value_t = Limits::default().idle_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_seconds: u64,
    /// HTTP/2 streams (concurrent requests) per connection.
    #[arg(long, env = "MIGRATION_INJECTOR_MAX_CONCURRENT_STREAMS", default_value_t = Limits::default().max_concurrent_streams, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_concurrent_streams: u32,
}

impl LimitsArgs {
    /// The limits; a budget that cannot hold two largest reviews is refused.
    pub fn limits(&self) -> Result<Limits> {
        if self.memory_budget_bytes < 2 * self.max_body_bytes {
            bail!(
                "--memory-budget-bytes ({}) must be at least twice --max-body-bytes ({}), so a largest review always fits",
                self.memory_budget_bytes,
                self.max_body_bytes
            );
        }
        Ok(Limits {
            max_body_bytes: self.max_body_bytes,
            request_timeout: Duration::from_secs(self.request_timeout_seconds),
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            memory_budget_bytes: self.memory_budget_bytes,
            idle_timeout: Duration::from_secs(self.idle_timeout_seconds),
            max_concurrent_streams: self.max_concurrent_streams,
            ..Limits::default()
        })
    }
}
