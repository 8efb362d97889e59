//! migration-injector: a Kubernetes mutating admission webhook that adds a schema-migration
//! init container (Atlas `migrate apply` by default) to annotated workloads.
//!
//! ```text
//!   main.rs + cli/   (binary: clap, anyhow, subcommands)
//!        │      └──────────────┬──────────────────┐
//!        ▼                     ▼                  ▼
//!   webhook/ ──────────────▶ tls/               check/   (`check`: target selection, one
//!        │                   (certificates:       │       function per check, against the
//!        │                    files, CA,          │       cluster through a kube Client)
//!        ▼                    self-managed)       │
//!   mutate/ ◀─────────────────────────────────────┘
//!                    (pure core: annotations → resolve → plan → patch; no I/O)
//!
//!   controller/   (`controller`: run-once mode's MigrationRuns, their Jobs, leader election)
//! ```
//!
//! Dependencies point down only: [`mutate`] knows nothing of HTTP or TLS; [`tls`] knows nothing
//! of admission; [`webhook`] wires both into [`webhook::Server`]; [`check`] diagnoses an install
//! with [`mutate`]'s own rules. See `ARCHITECTURE.md`.
#![forbid(unsafe_code)]
// No panics on the request path: errors are answered, never unwrapped.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

#[cfg(test)]
mod api_mock;
pub mod check;
pub mod controller;
pub mod mutate;
pub mod readiness;
pub mod tls;
pub mod waiter;
pub mod webhook;

/// An error and its causes on one line (`a: b: c`), for messages that travel as text (an
/// AdmissionReview status, a log field) rather than as an error chain.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
