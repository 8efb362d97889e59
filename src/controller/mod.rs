//! `controller`: the run-once mode's controller (issue 18). Waiting pods (label
//! `migrations.io/fingerprint`) get one [`crd::MigrationRun`] per namespace and fingerprint; the
//! controller runs it as Jobs with retries and writes its phase on the waiting pods, which the
//! waiter reads.
//!
//! ```text
//!   run.rs     the loop: reflectors → queue → reconcile (leader only) → apply
//!     ├── decide.rs   pure: stores' facts + now → Decision (the run's whole life)
//!     ├── job.rs      pure: the Job of an attempt; facts read from pods and Jobs
//!     ├── owners.rs   a pod's top workload (one cached GET)
//!     ├── lease.rs    leader election (pure step + the Lease I/O)
//!     ├── metrics.rs  admin.rs   /metrics, /healthz, /readyz
//!     └── crd.rs      the MigrationRun type and its CRD
//! ```

pub mod admin;
pub mod crd;
pub mod decide;
pub mod job;
pub mod lease;
pub mod metrics;
pub mod owners;
pub mod run;

pub use crd::{MigrationRun, MigrationRunSpec, MigrationRunStatus, Phase};
pub use lease::LeaseConfig;
pub use run::{run, ControllerError, Options};
