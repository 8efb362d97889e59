//! The CA the self-managed replicas share, kept in a Secret of their namespace: read it, or
//! create it if absent (create-if-absent: a replica that loses the race reads the winner's, so
//! exactly one CA exists). A Secret that cannot sign what the replicas serve is refused with
//! the fix. Needs only get/create on that Secret.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::PostParams;
use kube::{Api, Client};

use super::ca::{Ca, CertError};
use super::chain::check_window;

pub(crate) const CA_CERT_KEY: &str = "ca.crt";
pub(crate) const CA_KEY_KEY: &str = "ca.key";
/// Ten years: rotating the CA means a caBundle overlap, which this mode does not do yet.
const CA_DAYS: u32 = 3650;

#[derive(Debug, thiserror::Error)]
pub enum CaSecretError {
    #[error("Kubernetes API request failed")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("Secret {namespace}/{name} is refused as the CA: {reason}; fix it, or delete it to have a new CA created")]
    BadCaSecret {
        namespace: String,
        name: String,
        reason: CaRefusal,
    },
}

/// Why a Secret's content cannot be the shared CA.
#[derive(Debug, thiserror::Error)]
pub enum CaRefusal {
    #[error("it has no data")]
    NoData,
    #[error("it holds no {0}")]
    Missing(&'static str),
    #[error("{CA_CERT_KEY} is not a PEM certificate")]
    NotPem,
    #[error("{CA_CERT_KEY} is not an X.509 certificate")]
    NotX509,
    #[error("{CA_CERT_KEY} is not a CA certificate (basicConstraints CA:false)")]
    NotCa,
    #[error("{CA_CERT_KEY} is not valid now (valid from {not_before} to {not_after})")]
    NotValidNow {
        not_before: String,
        not_after: String,
    },
    #[error("{CA_KEY_KEY} is not a PEM private key")]
    KeyNotPem,
    #[error("{CA_KEY_KEY} is not the key of {CA_CERT_KEY}")]
    KeyMismatch,
    // The text alone, as before: the cause is in the message.
    #[error("{0}")]
    Unusable(CertError),
}

/// The CA every replica shares, read from or created in Secret `namespace/name`; a created CA is
/// named `common_name`.
pub async fn shared_ca(
    client: &Client,
    namespace: &str,
    name: &str,
    common_name: &str,
) -> Result<Ca, CaSecretError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    if let Some(existing) = secrets.get_opt(name).await? {
        return ca_from_secret(&existing, namespace, name);
    }
    let ca = Ca::generate(common_name, CA_DAYS)?;
    match secrets
        .create(&PostParams::default(), &new_secret(&ca, namespace, name))
        .await
    {
        Ok(_) => {
            tracing::info!(secret = %name, "created the shared CA");
            Ok(ca)
        }
        // Another replica created it first: use the winner's, so exactly one CA exists.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            tracing::info!(secret = %name, "another replica created the CA first; using it");
            let winner = secrets.get(name).await?;
            ca_from_secret(&winner, namespace, name)
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn new_secret(ca: &Ca, namespace: &str, name: &str) -> Secret {
    let data = BTreeMap::from([
        (
            CA_CERT_KEY.to_owned(),
            ByteString(ca.cert_pem().into_bytes()),
        ),
        (CA_KEY_KEY.to_owned(), ByteString(ca.key_pem().into_bytes())),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "migration-injector".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

fn ca_from_secret(secret: &Secret, namespace: &str, name: &str) -> Result<Ca, CaSecretError> {
    let bad = |reason: CaRefusal| CaSecretError::BadCaSecret {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        reason,
    };
    let data = secret.data.as_ref().ok_or_else(|| bad(CaRefusal::NoData))?;
    let text = |k: &'static str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .ok_or_else(|| bad(CaRefusal::Missing(k)))
    };
    let (cert_pem, key_pem) = (text(CA_CERT_KEY)?, text(CA_KEY_KEY)?);
    check_ca(&cert_pem, &key_pem).map_err(bad)?;
    Ca::from_pem(&cert_pem, &key_pem).map_err(|e| bad(CaRefusal::Unusable(e)))
}

/// Refuses a CA that cannot sign what the replicas serve: not a certificate, not a CA, not valid
/// now, or a key that is not the certificate's.
fn check_ca(cert_pem: &str, key_pem: &str) -> Result<(), CaRefusal> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|_| CaRefusal::NotPem)?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(der.as_ref()).map_err(|_| CaRefusal::NotX509)?;
    if !cert.is_ca() {
        return Err(CaRefusal::NotCa);
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    check_window(&cert, now).map_err(|w| CaRefusal::NotValidNow {
        not_before: w.not_before,
        not_after: w.not_after,
    })?;
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|_| CaRefusal::KeyNotPem)?;
    if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
        return Err(CaRefusal::KeyMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_mock;
    use http::Method;
    use serde_json::json;

    const GET: &str = "/api/v1/namespaces/ns/secrets/ca";
    const CREATE: &str = "/api/v1/namespaces/ns/secrets";

    fn secret_json(ca: &Ca) -> serde_json::Value {
        serde_json::to_value(new_secret(ca, "ns", "ca")).unwrap()
    }

    fn spawn_shared_ca(client: Client) -> tokio::task::JoinHandle<Result<Ca, CaSecretError>> {
        tokio::spawn(async move { shared_ca(&client, "ns", "ca", "svc self-managed CA").await })
    }

    #[tokio::test]
    async fn an_absent_secret_is_created_with_the_ca_it_returns() {
        let (client, mut api) = api_mock::pair();
        let task = spawn_shared_ca(client);
        api.expect(Method::GET, GET).await.not_found();
        let create = api.expect(Method::POST, CREATE).await;
        let body = create.body.clone();
        assert_eq!(body["metadata"]["name"], "ca");
        assert_eq!(body["type"], "Opaque");
        assert_eq!(
            body["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "migration-injector"
        );
        create.json(201, &body);
        let ca = api_mock::finish(task).await.unwrap();
        // What was stored is the CA returned: its PEM, base64 in the Secret's data.
        let stored: Secret = serde_json::from_value(body).unwrap();
        let data = stored.data.unwrap();
        assert_eq!(data[CA_CERT_KEY].0, ca.cert_pem().into_bytes());
        assert_eq!(data[CA_KEY_KEY].0, ca.key_pem().into_bytes());
    }

    #[tokio::test]
    async fn a_lost_create_race_uses_the_winners_ca() {
        let winner = Ca::generate("winner", 1).unwrap();
        let (client, mut api) = api_mock::pair();
        let task = spawn_shared_ca(client);
        api.expect(Method::GET, GET).await.not_found();
        api.expect(Method::POST, CREATE).await.status(
            409,
            "AlreadyExists",
            "secrets \"ca\" already exists",
        );
        api.expect(Method::GET, GET)
            .await
            .json(200, &secret_json(&winner));
        let ca = api_mock::finish(task).await.unwrap();
        assert_eq!(ca.cert_pem(), winner.cert_pem());
    }

    #[tokio::test]
    async fn an_existing_secret_is_used_as_it_is() {
        let existing = Ca::generate("existing", 1).unwrap();
        let (client, mut api) = api_mock::pair();
        let task = spawn_shared_ca(client);
        api.expect(Method::GET, GET)
            .await
            .json(200, &secret_json(&existing));
        let ca = api_mock::finish(task).await.unwrap();
        assert_eq!(ca.cert_pem(), existing.cert_pem());
    }

    #[tokio::test]
    async fn a_malformed_secret_is_refused_with_the_fix() {
        let (client, mut api) = api_mock::pair();
        let task = spawn_shared_ca(client);
        let mut malformed = secret_json(&Ca::generate("x", 1).unwrap());
        malformed["data"][CA_CERT_KEY] = json!("bm90IGEgY2VydA=="); // "not a cert"
        api.expect(Method::GET, GET).await.json(200, &malformed);
        let err = api_mock::finish(task).await.err().unwrap();
        assert!(matches!(err, CaSecretError::BadCaSecret { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "Secret ns/ca is refused as the CA: ca.crt is not a PEM certificate; fix it, or delete it to have a new CA created"
        );
    }

    #[tokio::test]
    async fn another_api_error_is_returned_without_a_create() {
        let (client, mut api) = api_mock::pair();
        let task = spawn_shared_ca(client);
        api.expect(Method::GET, GET)
            .await
            .status(403, "Forbidden", "secrets \"ca\" is forbidden");
        let err = api_mock::finish(task).await.err().unwrap();
        assert!(matches!(err, CaSecretError::Kube(_)), "{err:?}");
    }

    #[test]
    fn a_ca_secret_without_key_is_refused_with_the_fix() {
        let secret = Secret {
            data: Some(BTreeMap::from([(
                CA_CERT_KEY.to_owned(),
                ByteString(b"not a cert".to_vec()),
            )])),
            ..Secret::default()
        };
        let err = ca_from_secret(&secret, "ns", "ca")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("ns/ca") && err.contains("it holds no ca.key"),
            "{err}"
        );
        assert!(err.contains("delete it"), "{err}");
        // A Secret written by shared_ca round-trips.
        let ca = Ca::generate("t", 1).unwrap();
        let back = ca_from_secret(&new_secret(&ca, "ns", "ca"), "ns", "ca").unwrap();
        assert_eq!(back.cert_pem(), ca.cert_pem());
    }

    #[test]
    fn a_ca_secret_that_is_not_a_ca_is_refused() {
        let ca = Ca::generate("t", 1).unwrap();
        let leaf = ca.issue_server(&["x".into()], &[], 1).unwrap();
        let err = check_ca(&leaf.cert_pem, &leaf.key_pem).unwrap_err();
        assert!(matches!(err, CaRefusal::NotCa), "{err}");
        assert_eq!(
            err.to_string(),
            "ca.crt is not a CA certificate (basicConstraints CA:false)"
        );
        let other = Ca::generate("u", 1).unwrap();
        let err = check_ca(&ca.cert_pem(), &other.key_pem()).unwrap_err();
        assert_eq!(err.to_string(), "ca.key is not the key of ca.crt");
        assert!(check_ca(&ca.cert_pem(), &ca.key_pem()).is_ok());
    }
}
