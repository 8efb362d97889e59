//! `migration-injector wait`: the init container run-once mode injects. It waits until the
//! migration of its pod's revision has succeeded, reading the run's phase from its own pod's
//! annotations (written by the controller) through a downward API file: no network, no API
//! credentials, and nothing to lose when the run's Job is garbage-collected.
//!
//! It never waits silently: it says what it waits for when it starts, whenever the phase or the
//! message changes, and every [`REMIND`] while nothing does.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::mutate::annotations::Key;

/// How often the file is read: kubelet rewrites it within about a second of a change.
pub const POLL: Duration = Duration::from_secs(1);
/// How often the waiter repeats what it waits for while nothing changes.
pub const REMIND: Duration = Duration::from_secs(30);

/// Parses the downward API's annotations file: one `key="value"` per line, the value quoted as
/// Go's `%q` writes it. Lines that do not parse are skipped.
pub fn parse_downward(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (key, quoted) = line.split_once('=')?;
            Some((key.to_owned(), unquote_go(quoted)?))
        })
        .collect()
}

/// Reverses Go's `strconv.Quote`.
fn unquote_go(s: &str) -> Option<String> {
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = Vec::with_capacity(inner.len());
    let mut chars = inner.chars();
    let hex = |chars: &mut std::str::Chars<'_>, n: usize| -> Option<u32> {
        let digits: String = chars.take(n).collect();
        (digits.len() == n)
            .then(|| u32::from_str_radix(&digits, 16).ok())
            .flatten()
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let byte = |b: u8| Some(vec![b]);
        let decoded: Option<Vec<u8>> = match chars.next()? {
            'a' => byte(7),
            'b' => byte(8),
            'f' => byte(12),
            'n' => byte(b'\n'),
            'r' => byte(b'\r'),
            't' => byte(b'\t'),
            'v' => byte(11),
            '\\' => byte(b'\\'),
            '"' => byte(b'"'),
            'x' => hex(&mut chars, 2)
                .and_then(|v| u8::try_from(v).ok())
                .map(|b| vec![b]),
            'u' => hex(&mut chars, 4)
                .and_then(char::from_u32)
                .map(|c| c.to_string().into_bytes()),
            'U' => hex(&mut chars, 8)
                .and_then(char::from_u32)
                .map(|c| c.to_string().into_bytes()),
            _ => None,
        };
        out.extend(decoded?);
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// What the pod's annotations say about its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStatus {
    /// `None` before the controller has written anything.
    pub phase: Option<String>,
    pub message: Option<String>,
}

impl RunStatus {
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Self {
        RunStatus {
            phase: annotations.get(Key::RunPhase.name()).cloned(),
            message: annotations.get(Key::RunMessage.name()).cloned(),
        }
    }

    pub fn succeeded(&self) -> bool {
        self.phase.as_deref() == Some("Succeeded")
    }
}

/// What the waiter knows about its migration, for its messages.
#[derive(Debug, Clone)]
pub struct Target {
    pub fingerprint: String,
    /// The migration's image, from the run spec in its env (for humans only).
    pub image: Option<String>,
}

impl Target {
    /// Reads the image out of the run spec the webhook put in the waiter's env.
    pub fn new(fingerprint: String, run_spec: Option<&str>) -> Self {
        let image = run_spec
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
            .and_then(|v| {
                v.pointer("/container/image")
                    .and_then(|i| i.as_str())
                    .map(str::to_owned)
            });
        Target { fingerprint, image }
    }
}

/// The line the waiter logs (and leaves as its termination message).
pub fn describe(target: &Target, status: &RunStatus, waited: Duration) -> String {
    let what = format!(
        "the migration of this revision (MigrationRun {}{})",
        target.fingerprint,
        target
            .image
            .as_deref()
            .map(|i| format!(", image {i}"))
            .unwrap_or_default()
    );
    let message = status
        .message
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    match status.phase.as_deref() {
        Some("Succeeded") => format!("{what} succeeded{message}; starting the app"),
        None => format!(
            "waiting {}s for {what}: no word from the migration-injector controller yet; `kubectl get migrationrun {}` shows the run; if it does not exist, check that the controller is running",
            waited.as_secs(),
            target.fingerprint
        ),
        Some("Failed") => format!(
            "waiting {}s for {what}: it failed{message}; the app stays stopped until a retry succeeds (`kubectl annotate migrationrun {} {}=<new value> --overwrite`)",
            waited.as_secs(),
            target.fingerprint,
            Key::Retry
        ),
        Some(phase) => format!(
            "waiting {}s for {what}: {phase}{message}",
            waited.as_secs()
        ),
    }
}

/// Where the waiter reads and writes.
#[derive(Debug, Clone)]
pub struct Paths {
    pub annotations: PathBuf,
    pub termination_log: PathBuf,
}

/// Waits until the run succeeded. Logs go to stderr as plain lines: they are what `kubectl logs`
/// shows a user whose pod is in Init.
pub async fn wait(target: &Target, paths: &Paths) {
    let started = tokio::time::Instant::now();
    let mut last: Option<RunStatus> = None;
    let mut last_said = started;
    loop {
        // A missing or half-written file reads as "no word yet"; kubelet replaces it atomically.
        let text = tokio::fs::read_to_string(&paths.annotations)
            .await
            .unwrap_or_default();
        let status = RunStatus::from_annotations(&parse_downward(&text));
        let line = describe(target, &status, started.elapsed());
        let changed = last.as_ref() != Some(&status);
        if status.succeeded() {
            eprintln!("{line}");
            // The termination message is best effort: the log already has the line.
            let _ = tokio::fs::write(&paths.termination_log, &line).await;
            return;
        }
        if changed || last_said.elapsed() >= REMIND {
            eprintln!("{line}");
            let _ = tokio::fs::write(&paths.termination_log, &line).await;
            last_said = tokio::time::Instant::now();
        }
        last = Some(status);
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_kubelet_writes() {
        // kubelet's fieldpath.FormatMap: sorted `key=%q` lines.
        let text = "kubernetes.io/config.seen=\"2026-12-04T10:00:00Z\"\nmigrations.io/injected=\"{\\\"initContainer\\\":\\\"migrate\\\"}\"\nmigrations.io/run-message=\"ERROR: relation \\\"users\\\" exists\\nline two\\t\\u00e9\\x01\"\nmigrations.io/run-phase=\"Failed\"\nbroken line\n";
        let a = parse_downward(text);
        assert_eq!(
            a["migrations.io/injected"],
            r#"{"initContainer":"migrate"}"#
        );
        assert_eq!(
            a["migrations.io/run-message"],
            "ERROR: relation \"users\" exists\nline two\t\u{e9}\u{1}"
        );
        let status = RunStatus::from_annotations(&a);
        assert_eq!(status.phase.as_deref(), Some("Failed"));
        assert!(!status.succeeded());
        assert_eq!(a.len(), 4);
    }

    #[test]
    fn every_phase_says_what_it_waits_for() {
        let target = Target::new(
            "abc".into(),
            Some(r#"{"container":{"image":"m:2"},"volume":null}"#),
        );
        let none = RunStatus {
            phase: None,
            message: None,
        };
        let line = describe(&target, &none, Duration::from_secs(31));
        assert!(line.contains("MigrationRun abc, image m:2"), "{line}");
        assert!(line.contains("controller"), "{line}");
        let failed = RunStatus {
            phase: Some("Failed".into()),
            message: Some("syntax error".into()),
        };
        let line = describe(&target, &failed, Duration::from_secs(5));
        assert!(line.contains("failed: syntax error"), "{line}");
        assert!(line.contains("migrations.io/retry"), "{line}");
    }

    #[tokio::test(start_paused = true)]
    async fn returns_once_the_controller_says_succeeded() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            annotations: dir.path().join("annotations"),
            termination_log: dir.path().join("termination-log"),
        };
        std::fs::write(&paths.annotations, "migrations.io/run-phase=\"Running\"\n").unwrap();
        let target = Target::new("abc".into(), None);
        let waiting = tokio::spawn({
            let paths = paths.clone();
            async move { wait(&target, &paths).await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiting.is_finished(), "must wait while Running");
        let said = std::fs::read_to_string(&paths.termination_log).unwrap();
        assert!(said.contains("Running"), "{said}");
        std::fs::write(
            &paths.annotations,
            "migrations.io/run-message=\"applied in 3s\"\nmigrations.io/run-phase=\"Succeeded\"\n",
        )
        .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        waiting.await.unwrap();
        let said = std::fs::read_to_string(&paths.termination_log).unwrap();
        assert!(said.contains("succeeded: applied in 3s"), "{said}");
    }
}
