//! The annotation contract: the keys users set, and a decoder that reads only those keys out of
//! a metadata.annotations map (everything else, such as kubectl's last-applied configuration, is
//! skipped without being copied).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

/// The prefix of every key of the contract.
pub const PREFIX: &str = "migrations.io/";
/// Unknown keys remembered per map, so a map full of them costs nothing more.
const MAX_UNKNOWN: usize = 8;

/// Declares [`Key`] from one table, so a key cannot exist without its annotation name.
macro_rules! keys {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// Every key the injector reads, plus the record it writes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Key {
            $($(#[$doc])* $variant,)*
        }

        impl Key {
            pub const ALL: [Key; [$($name),*].len()] = [$(Key::$variant),*];

            pub const fn name(self) -> &'static str {
                match self {
                    $(Key::$variant => $name,)*
                }
            }
        }
    };
}

keys! {
    Image => "migrations.io/image",
    Secret => "migrations.io/secret",
    VolumeName => "migrations.io/volume-name",
    Env => "migrations.io/env",
    MountPath => "migrations.io/mount-path",
    ConfigFile => "migrations.io/config-file",
    Args => "migrations.io/args",
    Command => "migrations.io/command",
    PullPolicy => "migrations.io/pull-policy",
    ContainerName => "migrations.io/container-name",
    Position => "migrations.io/position",
    CpuRequest => "migrations.io/cpu-request",
    CpuLimit => "migrations.io/cpu-limit",
    MemoryRequest => "migrations.io/memory-request",
    MemoryLimit => "migrations.io/memory-limit",
    LockTimeout => "migrations.io/lock-timeout",
    UrlSecret => "migrations.io/url-secret",
    Dir => "migrations.io/dir",
    /// `once` (one run per revision, pods wait for it) or `every-pod` (the guide's workflow).
    Run => "migrations.io/run",
    /// Written by the injector in run-once mode, as a pod template *label*: the migration's
    /// fingerprint, which the controller selects waiting pods by.
    Fingerprint => "migrations.io/fingerprint",
    /// Written by the controller on waiting pods; read by the waiter through the downward API.
    RunPhase => "migrations.io/run-phase",
    RunMessage => "migrations.io/run-message",
    /// On a MigrationRun: a new value retries a failed run.
    Retry => "migrations.io/retry",
    /// Written by the injector on the pod template: what it injected, so UPDATE and removal
    /// touch exactly that.
    Injected => "migrations.io/injected",
}

impl Key {
    fn from_name(s: &str) -> Option<Key> {
        // Cheap reject for the common case: most annotations are not ours.
        if !s.starts_with(PREFIX) {
            return None;
        }
        Key::ALL.into_iter().find(|k| k.name() == s)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `migrations.io/*` values of one annotations map, borrowed from the request body when the
/// JSON string has no escapes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationAnnotations<'a> {
    values: [Option<Cow<'a, str>>; Key::ALL.len()],
    /// `migrations.io/` keys that are not ours: typos, warned about.
    pub unknown: Vec<Cow<'a, str>>,
    /// How many annotations the map holds in all, ours included.
    pub total: usize,
}

impl<'a> MigrationAnnotations<'a> {
    pub const EMPTY: Self = MigrationAnnotations {
        values: [const { None }; Key::ALL.len()],
        unknown: Vec::new(),
        total: 0,
    };

    pub fn get(&self, key: Key) -> Option<&str> {
        self.values[key as usize].as_deref()
    }

    pub fn set(&mut self, key: Key, value: impl Into<Cow<'a, str>>) {
        if self.values[key as usize].is_none() {
            self.total += 1;
        }
        self.values[key as usize] = Some(value.into());
    }
}

/// A warning for each `migrations.io/` key the injector does not know, naming the closest known
/// key: a typo (`migrations.io/imgae`) would otherwise pass in silence.
pub fn unknown_key_warnings(maps: [&MigrationAnnotations<'_>; 2]) -> Vec<String> {
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for name in maps.iter().flat_map(|m| m.unknown.iter()) {
        if seen.contains(&name.as_ref()) {
            continue;
        }
        seen.push(name);
        let closest = Key::ALL
            .into_iter()
            .filter(|k| *k != Key::Injected)
            .min_by_key(|k| strsim::levenshtein(k.name(), name))
            .map_or("", Key::name);
        out.push(format!(
            "annotation {} is not one migration-injector knows (did you mean {closest}?); it is ignored",
            super::denial::Quoted(name)
        ));
    }
    out
}

/// The annotations that apply to a workload: its own metadata first, then its pod template's.
#[derive(Debug, Clone, Copy)]
pub struct Layered<'v, 'a> {
    pub workload: &'v MigrationAnnotations<'a>,
    pub template: &'v MigrationAnnotations<'a>,
}

impl<'v> Layered<'v, '_> {
    pub fn get(self, key: Key) -> Option<&'v str> {
        self.workload.get(key).or_else(|| self.template.get(key))
    }
}

/// A string that borrows from the input when it can.
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for MigrationAnnotations<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MigrationAnnotations<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of string annotations")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut out = MigrationAnnotations::default();
                while let Some(Str(key)) = map.next_key::<Str<'de>>()? {
                    out.total += 1;
                    match Key::from_name(&key) {
                        Some(k) => {
                            let value: Option<Str<'de>> = map.next_value()?;
                            out.values[k as usize] = value.map(|s| s.0);
                        }
                        None => {
                            if key.starts_with(PREFIX) && out.unknown.len() < MAX_UNKNOWN {
                                out.unknown.push(key);
                            }
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// What the mutation reads of a pod template's labels: only the run-once fingerprint, and how
/// many labels there are (removing the last one removes the map). A few bytes rather than a slot
/// per annotation key: the views are moved by value on every request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationLabels<'a> {
    pub fingerprint: Option<Cow<'a, str>>,
    pub total: usize,
}

impl<'de: 'a, 'a> Deserialize<'de> for MigrationLabels<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MigrationLabels<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of string labels")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut out = MigrationLabels::default();
                while let Some(Str(key)) = map.next_key::<Str<'de>>()? {
                    out.total += 1;
                    if key == Key::Fingerprint.name() {
                        let value: Option<Str<'de>> = map.next_value()?;
                        out.fingerprint = value.map(|s| s.0);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_keep_only_the_fingerprint_and_the_count() {
        let json = r#"{"app":"shop","migrations.io/fingerprint":"abc","migrations.io/image":"x"}"#;
        let l: MigrationLabels<'_> = serde_json::from_str(json).unwrap();
        assert!(matches!(l.fingerprint, Some(Cow::Borrowed("abc"))));
        assert_eq!(l.total, 3);
        let none: MigrationLabels<'_> = serde_json::from_str(r#"{"app":"shop"}"#).unwrap();
        assert_eq!((none.fingerprint, none.total), (None, 1));
        assert!(serde_json::from_str::<MigrationLabels<'_>>(r#"{"a":1}"#).is_ok());
        assert!(serde_json::from_str::<MigrationLabels<'_>>(r#"["a"]"#).is_err());
    }

    #[test]
    fn reads_only_our_keys_and_borrows() {
        let json = r#"{"kubectl.kubernetes.io/last-applied-configuration":"{\"a\":1}","migrations.io/image":"ghcr.io/x:1","migrations.io/env":"prod","other":"x"}"#;
        let a: MigrationAnnotations<'_> = serde_json::from_str(json).unwrap();
        assert_eq!(a.get(Key::Image), Some("ghcr.io/x:1"));
        assert!(matches!(
            a.values[Key::Image as usize],
            Some(Cow::Borrowed(_))
        ));
        assert_eq!(a.get(Key::Env), Some("prod"));
        assert_eq!(a.get(Key::Secret), None);
        assert_eq!(a.total, 4);
    }

    #[test]
    fn workload_wins_over_template() {
        let w: MigrationAnnotations<'_> =
            serde_json::from_str(r#"{"migrations.io/env":"w"}"#).unwrap();
        let t: MigrationAnnotations<'_> =
            serde_json::from_str(r#"{"migrations.io/env":"t","migrations.io/image":"i:1"}"#)
                .unwrap();
        let l = Layered {
            workload: &w,
            template: &t,
        };
        assert_eq!(l.get(Key::Env), Some("w"));
        assert_eq!(l.get(Key::Image), Some("i:1"));
    }

    #[test]
    fn key_names_round_trip() {
        for k in Key::ALL {
            assert_eq!(Key::from_name(k.name()), Some(k));
        }
        assert_eq!(Key::from_name("migrations.io/unknown"), None);
    }
}
