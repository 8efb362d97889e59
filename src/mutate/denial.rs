//! Why a request is refused. Every message is one line that names the field or annotation, the
//! bad value and the fix, because users read it in `kubectl apply` output.

use std::fmt;

use super::annotations::Key;

/// A refusal of an object the user wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("annotation {key}={value:?} {problem}; fix: {fix}", value = Quoted(value))]
    InvalidAnnotation {
        key: Key,
        value: String,
        problem: String,
        fix: String,
    },

    #[error(
        "annotation {key}={image:?} names an image outside the allowed registries; fix: use an image starting with one of: {allowed}",
        key = Key::Image,
        image = Quoted(image),
        allowed = allowed.join(", ")
    )]
    ImageNotAllowed { image: String, allowed: Vec<String> },

    #[error(
        "{field} already has {what} named {name:?} that migration-injector did not add and that differs from the one it injects; fix: set annotation {rename}=<another name>, or rename yours"
    )]
    Clash {
        field: String,
        what: &'static str,
        name: String,
        rename: Key,
    },

    #[error(
        "annotation {key}=\"once\" asks for run-once mode, which is not enabled on this cluster (no migration-injector controller); fix: install the chart with controller.enabled=true, or remove the annotation to run the migration in every pod",
        key = Key::Run
    )]
    RunOnceUnavailable,

    #[error("{field} {problem}; fix: {fix}")]
    Malformed {
        field: String,
        problem: &'static str,
        fix: &'static str,
    },
}

/// A value a client controls, as it may appear in a message, warning or log line: quoted with
/// escapes (so a newline or an escape sequence cannot forge a line or colour a terminal) and cut
/// after [`Quoted::MAX`] characters, stating the full length.
#[derive(Clone, Copy)]
pub struct Quoted<'a>(pub &'a str);

impl Quoted<'_> {
    pub const MAX: usize = 200;
}

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(Self::MAX) {
            None => fmt::Debug::fmt(self.0, f),
            Some((cut, _)) => write!(f, "{:?}... ({} bytes in all)", &self.0[..cut], self.0.len()),
        }
    }
}

impl fmt::Debug for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Denial {
    pub fn invalid(
        key: Key,
        value: &str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Denial::InvalidAnnotation {
            key,
            value: value.to_owned(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// A short machine-readable reason for the AdmissionResponse status and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Denial::InvalidAnnotation { .. } => "InvalidAnnotation",
            Denial::ImageNotAllowed { .. } => "ImageNotAllowed",
            Denial::Clash { .. } => "NameClash",
            Denial::Malformed { .. } => "MalformedObject",
            Denial::RunOnceUnavailable => "RunOnceUnavailable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_with_key_value_and_fix() {
        let d = Denial::invalid(
            Key::PullPolicy,
            "Sometimes",
            "is not an image pull policy",
            "use Always, IfNotPresent or Never",
        );
        assert_eq!(
            d.to_string(),
            r#"annotation migrations.io/pull-policy="Sometimes" is not an image pull policy; fix: use Always, IfNotPresent or Never"#
        );
        let long = Denial::invalid(Key::Env, &"x\n".repeat(500), "p", "f").to_string();
        assert!(!long.contains('\n') && long.len() < 600, "{long}");
        assert!(long.contains("(1000 bytes in all)"), "{long}");
        let value = "y".repeat(200_000);
        let huge = Denial::invalid(Key::Env, &value, "p", "f").to_string();
        assert!(
            huge.len() < 400 && huge.contains("(200000 bytes in all)"),
            "{huge}"
        );
        assert_eq!(Quoted("a\u{1b}[31m").to_string(), r#""a\u{1b}[31m""#);
    }
}
