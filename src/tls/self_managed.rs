//! Self-managed certificates (`serve --self-managed`): the replicas agree on one CA kept in a
//! Secret of their namespace ([`super::ca_secret`]), each issues its own serving certificate
//! from it, and the MutatingWebhookConfiguration's caBundle is kept current by the replicas'
//! record protocol ([`super::ca_bundle`]), so a CA change loses no request. Needs only
//! get/create on that Secret and get/patch on that one webhook configuration.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;

use super::ca::{self as certs, Ca, CertError};
use super::ca_bundle::sync::sync_with_retries;
use super::ca_bundle::{not_yet_confirmed, SyncError, BUNDLE_PICKUP};
use super::ca_secret::CaSecretError;
use super::chain::{der_of, trusted_by};
use super::store::{self as tls, CertStore};

// Kept at their former paths.
pub use super::ca_bundle::{wanted_bundle, BundleTarget};

#[derive(Debug, thiserror::Error)]
pub enum SelfManagedError {
    #[error(transparent)]
    CaSecret(#[from] CaSecretError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Where the self-managed certificate material lives and what it is for.
#[derive(Debug, Clone)]
pub struct SelfManaged {
    pub namespace: String,
    pub service: String,
    pub ca_secret: String,
    pub webhook_config: String,
    pub extra_ips: Vec<IpAddr>,
    pub cert_days: u32,
    /// This replica's name (the pod name), unique among the replicas.
    pub replica: String,
}

impl SelfManaged {
    fn dns_names(&self) -> Vec<String> {
        certs::service_dns_names(&self.service, &self.namespace)
    }

    fn target(&self) -> BundleTarget {
        BundleTarget {
            webhook_config: self.webhook_config.clone(),
            replica: self.replica.clone(),
        }
    }
}

/// The CA every replica shares, read from or created in the Secret.
pub async fn shared_ca(client: &Client, cfg: &SelfManaged) -> Result<Ca, CaSecretError> {
    let common_name = format!("{} self-managed CA", cfg.service);
    super::ca_secret::shared_ca(client, &cfg.namespace, &cfg.ca_secret, &common_name).await
}

/// Issues a serving certificate from `ca` and puts it in `store`.
pub fn issue_into(ca: &Ca, cfg: &SelfManaged, store: &CertStore) -> Result<(), SelfManagedError> {
    let pair = ca.issue_server(&cfg.dns_names(), &cfg.extra_ips, cfg.cert_days)?;
    store.set(tls::certified_key(
        pair.cert_pem.as_bytes(),
        pair.key_pem.as_bytes(),
        "self-managed pair",
    )?);
    Ok(())
}

/// Start-up: the shared CA and a serving certificate. The caBundle is set by [`maintain`]'s first
/// check. A CA Secret that is refused (or unreadable) does not stop the process: the replica
/// reports not ready, says why, and keeps retrying.
pub async fn bootstrap(client: &Client, cfg: &SelfManaged) -> (Option<Ca>, Arc<CertStore>) {
    let store = Arc::new(CertStore::default());
    // Not ready until a check has seen the caBundle trust what this replica serves.
    store.set_problem(Some(not_yet_confirmed(&cfg.webhook_config)));
    match shared_ca(client, cfg).await {
        Ok(ca) => match issue_into(&ca, cfg, &store) {
            Ok(()) => (Some(ca), store),
            Err(e) => {
                store.set_problem(Some(format!("issuing the serving certificate failed: {e}")));
                (None, store)
            }
        },
        Err(e) => {
            store.set_problem(Some(crate::error_chain(&e)));
            (None, store)
        }
    }
}

/// Whether a serving certificate valid for `cert_days` and expiring at `not_after` is due for
/// renewal at `now`: with a third of its life left, so a failing renewal has time to be noticed.
pub fn needs_renewal(not_after: Option<i64>, now: i64, cert_days: u32) -> bool {
    let renew_before = i64::from(cert_days) * 86_400 / 3;
    not_after.is_none_or(|t| t - now < renew_before)
}

/// Keeps the serving certificate fresh, follows a replaced CA Secret without losing a request,
/// and keeps the caBundle current (a `helm upgrade` or someone else may have reset it), checking
/// every `interval`.
pub async fn maintain(
    client: Client,
    cfg: SelfManaged,
    mut ca: Option<Ca>,
    store: Arc<CertStore>,
    interval: Duration,
) {
    let stale_after = i64::try_from(interval.as_secs().max(1) * 3).unwrap_or(i64::MAX);
    // Two intervals, as managed_bundle: time for a slow answer, under peers' 3-interval expiry.
    let round_deadline = interval.max(Duration::from_secs(1)).saturating_mul(2);
    let no_answer = || format!("no answer within {}s", round_deadline.as_secs());
    let target = cfg.target();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let started = tokio::time::Instant::now();
        // A replica that cannot read the Secret leaves the caBundle alone (its view may be old)
        // and only renews its record, so the CA it serves stays trusted.
        let mut secret_problem = None;
        let latest = match tokio::time::timeout(round_deadline, shared_ca(&client, &cfg)).await {
            Ok(Ok(latest)) => Some(latest),
            // A hung API server: the next round asks again. Readiness is left as it was: all
            // replicas share the CA, so an API outage must not take every replica out.
            Err(_) => {
                tracing::warn!(error = %no_answer(), secret = %cfg.ca_secret, "could not read the CA Secret; retrying");
                continue;
            }
            Ok(Err(e)) => {
                let e = crate::error_chain(&e);
                tracing::error!(error = %e, "cannot use the shared CA; keeping the current certificate and leaving the caBundle alone");
                secret_problem = Some(e);
                None
            }
        };
        let switching = match (&latest, &ca) {
            (Some(l), Some(c)) => c.cert_pem() != l.cert_pem(),
            (Some(_), None) => true,
            (None, _) => false,
        };
        // The CAs this replica needs trusted: the one it serves and, while switching, the next.
        let mut mine: Vec<Vec<u8>> = ca.iter().map(|c| der_of(&c.cert_pem())).collect();
        if let Some(l) = latest.as_ref().filter(|_| switching) {
            mine.push(der_of(&l.cert_pem()));
        }
        let secret_ca = latest.as_ref().map(|l| der_of(&l.cert_pem()));
        let sync = sync_with_retries(&client, &target, secret_ca.as_deref(), &mine, stale_after);
        let synced = match tokio::time::timeout(
            round_deadline.saturating_sub(started.elapsed()),
            sync,
        )
        .await
        {
            Ok(Ok(synced)) => synced,
            failed => {
                let error = match failed {
                    Ok(Err(e)) => crate::error_chain(&e),
                    _ => no_answer(),
                };
                // Readiness is left as it was: an API hiccup must not take every replica out.
                tracing::warn!(error = %error, "could not update the caBundle; retrying");
                continue;
            }
        };
        if synced.as_ref().is_some_and(|s| s.added_mine) || (switching && ca.is_some()) {
            // A CA this replica needs was just added (by it or a peer): give the API server time
            // to load it before serving from it.
            tokio::time::sleep(BUNDLE_PICKUP).await;
        }
        if let Some(latest) = latest.filter(|_| switching) {
            if ca.is_some() {
                tracing::warn!(secret = %cfg.ca_secret, "the shared CA changed; adopting it");
            }
            ca = Some(latest);
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if let Some(current) = &ca {
            if switching || needs_renewal(store.not_after(), now, cfg.cert_days) {
                match issue_into(current, &cfg, &store) {
                    Ok(()) => tracing::info!("issued a new self-managed serving certificate"),
                    Err(e) => tracing::error!(error = %e, "issuing the serving certificate failed"),
                }
            }
        }
        // Ready only when the API server will trust what this replica serves.
        store.set_problem(match &synced {
            // Nothing served yet because the CA Secret is refused: say so.
            _ if ca.is_none() => secret_problem,
            Some(s) if !trusted_by(&store, &s.bundle) => Some(format!(
                "the caBundle of {} does not trust the served certificate yet",
                cfg.webhook_config
            )),
            _ if store.leaf_der().is_none() => Some("no serving certificate issued yet".to_owned()),
            _ => None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_with_a_third_of_the_life_left() {
        let day = 86_400;
        assert!(needs_renewal(None, 0, 90));
        assert!(!needs_renewal(Some(90 * day), 0, 90));
        assert!(!needs_renewal(Some(31 * day), 0, 90));
        assert!(needs_renewal(Some(29 * day), 0, 90));
        assert!(
            needs_renewal(Some(-1), 0, 90),
            "an expired certificate is renewed"
        );
    }

    use crate::api_mock::{self, ApiServer, Call};
    use crate::tls::ca_bundle::testing::{annotations, apply, bundle, config, CONFIG_PATH};
    use crate::tls::ca_secret::new_secret;
    use crate::tls::chain::{anchors, fingerprint};
    use http::Method;
    use rustls::pki_types::CertificateDer;
    use serde_json::{json, Value};
    use tokio::time::Instant;
    use tower_test::mock::SendResponse;

    const SECRET_PATH: &str = "/api/v1/namespaces/ns/secrets/ca";
    const CHECK: Duration = Duration::from_secs(1);

    fn cfg() -> SelfManaged {
        SelfManaged {
            namespace: "ns".into(),
            service: "svc".into(),
            ca_secret: "ca".into(),
            webhook_config: "wh".into(),
            extra_ips: vec![],
            cert_days: 90,
            replica: "r1".into(),
        }
    }

    fn secret(ca: &Ca) -> Value {
        serde_json::to_value(new_secret(ca, "ns", "ca")).unwrap()
    }

    /// Whether the served certificate was issued by `ca`.
    fn serves_from(store: &CertStore, ca: &Ca) -> bool {
        let root = CertificateDer::from(der_of(&ca.cert_pem()));
        !anchors(&store.chain(), &[root]).is_empty()
    }

    /// Start-up against a Secret holding `ca`, then the loop.
    async fn start(
        client: Client,
        api: &mut ApiServer,
        ca: &Ca,
    ) -> (Arc<CertStore>, tokio::task::JoinHandle<()>) {
        let boot = tokio::spawn({
            let client = client.clone();
            async move { bootstrap(&client, &cfg()).await }
        });
        api.expect(Method::GET, SECRET_PATH)
            .await
            .json(200, &secret(ca));
        let (loaded, store) = api_mock::finish(boot).await;
        assert!(serves_from(&store, ca));
        assert_eq!(store.readiness(), Err(not_yet_confirmed("wh")));
        let task = tokio::spawn(maintain(client, cfg(), loaded, store.clone(), CHECK));
        (store, task)
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_check_puts_the_ca_in_the_ca_bundle_then_the_replica_is_ready() {
        let a = Ca::generate("A", 1).unwrap();
        let (client, mut api) = api_mock::pair();
        let (store, task) = start(client, &mut api, &a).await;
        api.expect(Method::GET, SECRET_PATH)
            .await
            .json(200, &secret(&a));
        api.expect(Method::GET, CONFIG_PATH)
            .await
            .json(200, &config(Value::Null, &[None]));
        let current = apply(
            &config(Value::Null, &[None]),
            api.expect(Method::PATCH, CONFIG_PATH).await,
        );
        let a_der = der_of(&a.cert_pem());
        assert_eq!(bundle(&current, 0), vec![a_der.clone()]);
        let record = &annotations(&current)["serving.migrations.io/r1"];
        assert!(record.ends_with(&fingerprint(&a_der).unwrap()), "{record}");
        // Not ready until the check is over (after the pickup time: the CA was new).
        assert_eq!(store.readiness(), Err(not_yet_confirmed("wh")));
        let _next = api.expect(Method::GET, SECRET_PATH).await;
        assert_eq!(store.readiness(), Ok(()));
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_replaced_ca_secret_is_served_from_only_once_the_ca_bundle_holds_it() {
        let (a, b) = (Ca::generate("A", 1).unwrap(), Ca::generate("B", 1).unwrap());
        let (client, mut api) = api_mock::pair();
        let (store, task) = start(client, &mut api, &a).await;
        let (a_der, b_der) = (der_of(&a.cert_pem()), der_of(&b.cert_pem()));
        let record = format!("1 {}", fingerprint(&a_der).unwrap());
        let current = config(
            json!({ "serving.migrations.io/r1": record }),
            &[Some(std::slice::from_ref(&a_der))],
        );
        // Someone replaced the Secret: B is recorded and put in the caBundle, A kept.
        api.expect(Method::GET, SECRET_PATH)
            .await
            .json(200, &secret(&b));
        api.expect(Method::GET, CONFIG_PATH)
            .await
            .json(200, &current);
        assert!(serves_from(&store, &a));
        let current = apply(&current, api.expect(Method::PATCH, CONFIG_PATH).await);
        assert_eq!(bundle(&current, 0), vec![b_der.clone(), a_der.clone()]);
        let fps = format!(
            "{},{}",
            fingerprint(&a_der).unwrap(),
            fingerprint(&b_der).unwrap()
        );
        assert!(annotations(&current)["serving.migrations.io/r1"].ends_with(&fps));
        // The API server gets a moment to load B before B is served.
        tokio::time::sleep(BUNDLE_PICKUP / 2).await;
        assert!(serves_from(&store, &a));
        tokio::time::sleep(BUNDLE_PICKUP).await;
        assert!(serves_from(&store, &b));
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_ca_secret_keeps_the_replica_unready_with_the_reason() {
        let (client, mut api) = api_mock::pair();
        let boot = tokio::spawn({
            let client = client.clone();
            async move { bootstrap(&client, &cfg()).await }
        });
        let mut malformed = secret(&Ca::generate("A", 1).unwrap());
        malformed["data"]["ca.key"] = json!("bm90IGEga2V5"); // "not a key"
        api.expect(Method::GET, SECRET_PATH)
            .await
            .json(200, &malformed);
        let (loaded, store) = api_mock::finish(boot).await;
        assert!(loaded.is_none());
        let refused = "Secret ns/ca is refused as the CA: ca.key is not a PEM private key; fix it, or delete it to have a new CA created";
        assert_eq!(store.readiness(), Err(refused.to_owned()));
        // The loop keeps trying, only refreshes its (empty) record, and stays unready.
        let task = tokio::spawn(maintain(client, cfg(), loaded, store.clone(), CHECK));
        api.expect(Method::GET, SECRET_PATH)
            .await
            .json(200, &malformed);
        let current = config(
            Value::Null,
            &[Some(&[der_of(
                &Ca::generate("helm", 1).unwrap().cert_pem(),
            )])],
        );
        api.expect(Method::GET, CONFIG_PATH)
            .await
            .json(200, &current);
        let after = apply(&current, api.expect(Method::PATCH, CONFIG_PATH).await);
        assert_eq!(
            after["webhooks"], current["webhooks"],
            "the caBundle is left alone"
        );
        let _next = api.expect(Method::GET, SECRET_PATH).await;
        assert_eq!(store.readiness(), Err(refused.to_owned()));
        task.abort();
    }

    /// The first check, on a configuration without caBundle; returns it as patched. The
    /// replica is ready once the next check starts.
    async fn first_check(api: &mut ApiServer, ca: &Ca) -> Value {
        api.expect(Method::GET, SECRET_PATH)
            .await
            .json(200, &secret(ca));
        let empty = config(Value::Null, &[None]);
        api.expect(Method::GET, CONFIG_PATH).await.json(200, &empty);
        apply(&empty, api.expect(Method::PATCH, CONFIG_PATH).await)
    }

    /// Leaves `hung` unanswered: no other request comes before the round's deadline (two
    /// check intervals after `round_started`), and the replica stays ready throughout.
    async fn hang_until_the_deadline(
        api: &mut ApiServer,
        hung: Call,
        round_started: Instant,
        store: &CertStore,
    ) -> SendResponse<http::Response<kube::client::Body>> {
        let guard = hung.hang();
        assert_eq!(store.readiness(), Ok(()));
        let deadline = round_started + CHECK * 2;
        api.expect_silence(deadline - Instant::now() - Duration::from_millis(1))
            .await;
        assert_eq!(
            store.readiness(),
            Ok(()),
            "an API outage keeps the replica in"
        );
        guard
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_ca_secret_read_is_abandoned_and_retried_the_replica_staying_ready() {
        let a = Ca::generate("A", 1).unwrap();
        let (client, mut api) = api_mock::pair();
        let (store, task) = start(client, &mut api, &a).await;
        first_check(&mut api, &a).await;
        let hung = api.expect(Method::GET, SECRET_PATH).await;
        let started = Instant::now();
        let _hung = hang_until_the_deadline(&mut api, hung, started, &store).await;
        // Abandoned at the deadline; the next round asks again at once.
        let _retry = api.expect(Method::GET, SECRET_PATH).await;
        assert_eq!(started.elapsed(), CHECK * 2);
        assert_eq!(store.readiness(), Ok(()));
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_ca_bundle_sync_is_abandoned_and_retried_the_replica_staying_ready() {
        let a = Ca::generate("A", 1).unwrap();
        let (client, mut api) = api_mock::pair();
        let (store, task) = start(client, &mut api, &a).await;
        let current = first_check(&mut api, &a).await;
        // The read of the webhook configuration hangs…
        api.expect(Method::GET, SECRET_PATH)
            .await
            .json(200, &secret(&a));
        let started = Instant::now();
        let hung = api.expect(Method::GET, CONFIG_PATH).await;
        let _hung_get = hang_until_the_deadline(&mut api, hung, started, &store).await;
        api.expect(Method::GET, SECRET_PATH)
            .await
            .json(200, &secret(&a));
        assert_eq!(started.elapsed(), CHECK * 2);
        // …then, in the next round, its patch.
        let started = Instant::now();
        api.expect(Method::GET, CONFIG_PATH)
            .await
            .json(200, &current);
        let hung = api.expect(Method::PATCH, CONFIG_PATH).await;
        let _hung_patch = hang_until_the_deadline(&mut api, hung, started, &store).await;
        let _retry = api.expect(Method::GET, SECRET_PATH).await;
        assert_eq!(started.elapsed(), CHECK * 2);
        assert_eq!(store.readiness(), Ok(()));
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn once_the_api_server_answers_again_the_ca_bundle_is_repaired() {
        let a = Ca::generate("A", 1).unwrap();
        let (client, mut api) = api_mock::pair();
        let (store, task) = start(client, &mut api, &a).await;
        let current = first_check(&mut api, &a).await;
        let hung = api.expect(Method::GET, SECRET_PATH).await;
        let started = Instant::now();
        let _hung = hang_until_the_deadline(&mut api, hung, started, &store).await;
        // Back, the caBundle reset meanwhile (a `helm upgrade`): A is put back at once.
        api.expect(Method::GET, SECRET_PATH)
            .await
            .json(200, &secret(&a));
        let mut reset = current.clone();
        reset["webhooks"][0]["clientConfig"]
            .as_object_mut()
            .unwrap()
            .remove("caBundle");
        api.expect(Method::GET, CONFIG_PATH).await.json(200, &reset);
        let after = apply(&reset, api.expect(Method::PATCH, CONFIG_PATH).await);
        assert_eq!(started.elapsed(), CHECK * 2);
        assert_eq!(bundle(&after, 0), vec![der_of(&a.cert_pem())]);
        let _next = api.expect(Method::GET, SECRET_PATH).await;
        assert_eq!(store.readiness(), Ok(()));
        task.abort();
    }
}
