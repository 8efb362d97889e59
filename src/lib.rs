//! migration-injector: a Kubernetes mutating admission webhook that adds a schema-migration
//! init container (Atlas `migrate apply` by default) to annotated workloads.
//!
//! The pipeline is decode ([`workload`], [`annotations`]) → resolve ([`injection`]) → plan
//! ([`plan`]) → patch ([`patch`]), wrapped by [`admission`] for the webhook and by [`inject`]
//! for the CLI.
#![forbid(unsafe_code)]
// No panics on the request path: errors are answered, never unwrapped.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod admission;
pub mod annotations;
pub mod certs;
pub mod cli;
pub mod config;
pub mod denial;
pub mod inject;
pub mod injection;
pub mod metrics;
pub mod mutation;
pub mod patch;
pub mod plan;
pub mod selfmanaged;
pub mod server;
pub mod tls;
pub mod validate;
pub mod workload;
