//! The words of each check's result: one line, and for a failure its fix. Kept apart from the
//! checks so the logic can be tested on types and the wording on text.

use super::checks::{
    AnnotationsCheck, AnnotationsOutcome, Cause, Coverage, DryRunCheck, DryRunOutcome, Exclusion,
    LiveCheck, RunCheck, RunOutcome, SecretCheck, SecretOutcome, WebhookCheck,
};
use crate::mutate::annotations::Key;

/// One printed result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Pass(String),
    Fail {
        what: String,
        fix: String,
    },
    /// Said under the line before it; not a failure.
    Warning(String),
}

fn fail(what: impl Into<String>, fix: impl Into<String>) -> Line {
    Line::Fail {
        what: what.into(),
        fix: fix.into(),
    }
}

impl WebhookCheck {
    pub fn line(&self) -> Line {
        let config = &self.config;
        match &self.coverage {
            Coverage::Missing => fail(
                format!("MutatingWebhookConfiguration {config} does not exist"),
                "install the chart (helm install migration-injector charts/migration-injector), or pass --webhook-config-name",
            ),
            Coverage::NoRule { plural } => fail(
                format!("MutatingWebhookConfiguration {config} has no rule for CREATE of {plural}"),
                format!("enable {plural} in the chart's webhook.kinds values"),
            ),
            Coverage::Covered(w) => Line::Pass(format!(
                "MutatingWebhookConfiguration {config} covers {}s (webhook {})",
                self.kind, w.name
            )),
        }
    }
}

impl AnnotationsCheck {
    pub fn line(&self) -> Line {
        let (kind, name) = (self.kind, &self.name);
        match &self.outcome {
            AnnotationsOutcome::Valid => {
                Line::Pass(format!("the annotations of {kind} {name} are valid"))
            }
            AnnotationsOutcome::NotOptedIn => fail(
                format!(
                    "{kind} {name} has no {} annotation: it does not opt in",
                    Key::Image
                ),
                format!(
                    "add {}: <your migrations image> to its metadata.annotations",
                    Key::Image
                ),
            ),
            AnnotationsOutcome::Refused(d) => fail(
                format!("the annotations of {kind} {name} are refused: {d}"),
                "correct the annotation the message names",
            ),
            AnnotationsOutcome::Unreadable(e) => fail(
                format!("{kind} {name} cannot be read: {e}"),
                "correct the manifest",
            ),
        }
    }
}

impl SecretCheck {
    pub fn line(&self) -> Line {
        let (ns, name) = (&self.namespace, &self.name);
        match &self.outcome {
            SecretOutcome::Missing => fail(
                format!("Secret {ns}/{name} does not exist: the migrate container cannot start"),
                format!("create it (kubectl -n {ns} create secret generic {name} --from-file=...)"),
            ),
            SecretOutcome::MissingKey(k) => fail(
                format!("Secret {ns}/{name} has no key {k:?}"),
                format!("add the key {k:?} to the Secret (the migration tool reads it)"),
            ),
            SecretOutcome::HoldsKey(k) => Line::Pass(format!("Secret {ns}/{name} holds {k:?}")),
            SecretOutcome::Exists => Line::Pass(format!("Secret {ns}/{name} exists")),
            SecretOutcome::Unreadable(e) => fail(
                format!("Secret {ns}/{name} cannot be read: {e}"),
                "run check with credentials that may get Secrets in the namespace",
            ),
        }
    }
}

impl DryRunCheck {
    pub fn line(&self) -> Line {
        let (kind, name, ns) = (self.kind, &self.name, &self.namespace);
        let subject = format!("a server-side dry-run create of {kind} {name} in {ns}");
        match &self.outcome {
            DryRunOutcome::Injected => Line::Pass(format!(
                "{subject} comes back with the migration init container"
            )),
            DryRunOutcome::NotInjected(why) => {
                let (what, fix) = exclusion_words(why, ns);
                fail(
                    format!("{subject} comes back without the init container: {what}"),
                    fix,
                )
            }
            DryRunOutcome::Failed { cause, message } => {
                let (what, fix) = cause_words(*cause, message, &self.config);
                fail(format!("{subject} failed: {what}"), fix)
            }
        }
    }
}

fn exclusion_words(why: &Exclusion, ns: &str) -> (String, String) {
    match why {
        Exclusion::NotOptedIn => (
            "it is not opted in".to_owned(),
            format!("add the {} annotation", Key::Image),
        ),
        Exclusion::NamespaceSelector { labels } => (
            format!("the webhook's namespaceSelector excludes namespace {ns} (labels {labels:?})"),
            format!("use a namespace the webhook covers, or change the label of {ns} / the chart's webhook.namespaceSelector and webhook.excludeNamespaces"),
        ),
        Exclusion::ObjectSelector { labels } => (
            format!("the webhook's objectSelector excludes the object (labels {labels:?})"),
            "change the object's labels (migrations.io/injection: disabled opts out) or the chart's webhook.objectSelector".to_owned(),
        ),
        Exclusion::MatchConditions(names) => (
            format!("a matchCondition left it out ({})", names.join(", ")),
            format!(
                "put {} on the workload's or its pod template's metadata.annotations",
                Key::Image
            ),
        ),
        Exclusion::Unknown => (
            "the webhook was not called, or left it unchanged".to_owned(),
            "check the webhook's logs at debug level (--log-level migration_injector=debug)"
                .to_owned(),
        ),
    }
}

/// What an API server error for the webhook call means, and its fix.
fn cause_words(cause: Cause, message: &str, config: &str) -> (String, String) {
    match cause {
        Cause::Untrusted => (
            format!("the API server does not trust the webhook's certificate: {message}"),
            format!("the caBundle of MutatingWebhookConfiguration {config} does not match the CA of the serving certificate: re-run `helm upgrade` (tls.mode helm), check cert-manager's CA injector, or restart the webhook pods (selfManaged)"),
        ),
        Cause::Unreachable => (
            format!("the API server cannot reach the webhook: {message}"),
            "check the webhook's Service and that its pods are Ready: kubectl -n <webhook namespace> get pods,endpoints".to_owned(),
        ),
        Cause::TimedOut => (
            format!("the webhook call timed out: {message}"),
            "check the webhook pods' logs and the network path from the API server to them (NetworkPolicy, firewall)".to_owned(),
        ),
        Cause::Denied => (
            format!("the webhook refused the object: {message}"),
            "correct the annotation the message names".to_owned(),
        ),
        Cause::Refused => (
            format!("the API server refused the dry-run create: {message}"),
            "read the message above".to_owned(),
        ),
    }
}

impl LiveCheck {
    pub fn line(&self) -> Line {
        let (kind, name, ns) = (self.kind, &self.name, &self.namespace);
        if self.injected {
            Line::Pass(format!("the live {kind} {name} carries the injection"))
        } else {
            fail(
                format!("the live {kind} {name} does not carry the injection: it was created before the webhook was in place, or was skipped"),
                format!(
                    "kubectl -n {ns} rollout restart {}/{name} (or re-apply it) once the checks above pass",
                    kind.as_str().to_ascii_lowercase()
                ),
            )
        }
    }
}

impl RunCheck {
    pub fn line(&self) -> Line {
        let (ns, fp) = (&self.namespace, &self.fingerprint);
        let waiting = match self.waiting {
            0 => String::new(),
            1 => "; 1 pod waits for it".to_owned(),
            n => format!("; {n} pods wait for it"),
        };
        let said = |message: &str| {
            if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            }
        };
        match &self.outcome {
            RunOutcome::Missing => fail(
                format!("MigrationRun {ns}/{fp} does not exist yet{waiting}: the controller has not seen a waiting pod, is not running, or is not installed"),
                "kubectl get crd migrationruns.migrations.io and kubectl get pods -A -l app.kubernetes.io/component=controller (install the chart with controller.enabled=true; the controller must be Running), then its logs; or set migrations.io/run=every-pod",
            ),
            RunOutcome::Found { phase, attempts, message, finished } if phase == "Succeeded" => {
                Line::Pass(format!(
                    "the migration of this revision (MigrationRun {ns}/{fp}) succeeded{} after {attempts} attempt(s){}",
                    finished.as_deref().map(|f| format!(" at {f}")).unwrap_or_default(),
                    said(message)
                ))
            }
            RunOutcome::Found { phase, attempts, message, .. } if phase == "Failed" => fail(
                format!("the migration of this revision (MigrationRun {ns}/{fp}) failed after {attempts} attempt(s){}{waiting}", said(message)),
                format!("fix the migration, then retry it: kubectl -n {ns} annotate migrationrun {fp} {}=\"$(date +%s)\" --overwrite", Key::Retry),
            ),
            RunOutcome::Found { phase, attempts, message, .. } => Line::Pass(format!(
                "the migration of this revision (MigrationRun {ns}/{fp}) is {phase} (attempt {attempts}){}{waiting}",
                said(message)
            )),
            RunOutcome::Unreadable(e) => fail(
                format!("MigrationRun {ns}/{fp} cannot be read: {e}"),
                "grant get on migrationruns.migrations.io to whoever runs check",
            ),
        }
    }
}
