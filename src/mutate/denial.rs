//! Why a request is refused. Every message is one line that names the field or annotation, the
//! bad value and the fix, because users read it in `kubectl apply` output.

use std::fmt;

use super::annotations::Key;

/// A refusal of an object the user wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("annotation {key}={value:?} {problem}; fix: {fix}", value = Shorten(value))]
    InvalidAnnotation {
        key: Key,
        value: String,
        problem: String,
        fix: String,
    },

    #[error(
        "annotation {key}={image:?} names an image outside the allowed registries; fix: use an image starting with one of: {allowed}",
        key = Key::Image,
        image = Shorten(image),
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

    #[error("{field} {problem}; fix: {fix}")]
    Malformed {
        field: String,
        problem: &'static str,
        fix: &'static str,
    },
}

/// Long values (a pasted manifest, say) are cut so the message stays readable.
struct Shorten<'a>(&'a str);

impl fmt::Debug for Shorten<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 120;
        if self.0.chars().count() <= MAX {
            fmt::Debug::fmt(self.0, f)
        } else {
            let cut: String = self.0.chars().take(MAX).collect();
            write!(f, "{:?}...", cut)
        }
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
        assert!(!long.contains('\n') && long.len() < 400, "{long}");
    }
}
