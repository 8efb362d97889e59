//! `--ca-bundle-check-interval`, named `--self-managed-check-interval` before it also drove
//! `--manage-ca-bundle`. The old flag is a clap alias; the old env var is read here, since clap
//! gives an argument one env var. Hand-written `Args` because only `ArgMatches` tells whether the
//! new name was set or is its default.

use std::ffi::OsString;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};

const ID: &str = "ca_bundle_check_interval";
pub const ENV: &str = "MIGRATION_INJECTOR_CA_BUNDLE_CHECK_INTERVAL";
/// The env var of the old name, still honoured.
pub const OLD_ENV: &str = "MIGRATION_INJECTOR_SELF_MANAGED_CHECK_INTERVAL";
const DEFAULT_SECONDS: u64 = 60;
const DEFAULT_TEXT: &str = "60";

/// Time between checks of the caBundle (and, self-managed, of the certificate's age).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckInterval(pub Duration);

impl Args for CheckInterval {
    fn augment_args(cmd: Command) -> Command {
        cmd.arg(
            Arg::new(ID)
                .long("ca-bundle-check-interval")
                .alias("self-managed-check-interval")
                .env(ENV)
                .value_name("SECONDS")
                .default_value(DEFAULT_TEXT)
                .value_parser(clap::value_parser!(u64).range(1..))
                .help(
                    "With --self-managed or --manage-ca-bundle: seconds between checks of the \
                     caBundle (and, self-managed, of the certificate's age). Formerly \
                     --self-managed-check-interval (still accepted), whose env var \
                     MIGRATION_INJECTOR_SELF_MANAGED_CHECK_INTERVAL is still read; set with a \
                     different value than this one, the start is refused",
                ),
        )
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for CheckInterval {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let new = matches
            .get_one::<u64>(ID)
            .copied()
            .unwrap_or(DEFAULT_SECONDS);
        let explicit = matches!(
            matches.value_source(ID),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        let seconds = resolve(new, explicit, std::env::var_os(OLD_ENV))?;
        Ok(Self(Duration::from_secs(seconds)))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

/// The new name's value, or the old env var's when the new name is unset; both set must agree.
fn resolve(new: u64, explicit: bool, old: Option<OsString>) -> Result<u64, clap::Error> {
    let Some(raw) = old else { return Ok(new) };
    let text = raw.to_string_lossy();
    let old = text
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|s| *s >= 1)
        .ok_or_else(|| {
            clap::Error::raw(
                ErrorKind::ValueValidation,
                format!("env {OLD_ENV} = {text:?} is not a number of seconds (at least 1)\n"),
            )
        })?;
    if explicit && old != new {
        return Err(clap::Error::raw(
            ErrorKind::ArgumentConflict,
            format!(
                "--ca-bundle-check-interval (env {ENV}) = {new} and the old env {OLD_ENV} = {old} disagree; fix: drop {OLD_ENV}\n"
            ),
        ));
    }
    Ok(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_env_fills_in_and_must_agree() {
        assert_eq!(resolve(60, false, None).unwrap(), 60);
        assert_eq!(resolve(60, false, Some("30".into())).unwrap(), 30);
        assert_eq!(resolve(30, true, Some("30".into())).unwrap(), 30);
        let err = resolve(45, true, Some("30".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains(OLD_ENV) && err.contains(ENV), "{err}");
        assert!(resolve(60, false, Some("0".into())).is_err());
        assert!(resolve(60, false, Some("soon".into())).is_err());
    }
}
