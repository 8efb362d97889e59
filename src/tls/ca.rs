//! Certificate generation (rcgen, ECDSA P-256): a CA and serving certificates signed by it, for
//! `serve --self-signed`, `certs generate` and tests.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate generation failed")]
    Generate(#[from] rcgen::Error),
    #[error("{0:?} is not a valid DNS name for a certificate")]
    BadName(String),
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct PemPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate authority that can issue serving certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    // Back-date a little so clocks that lag behind ours still accept the certificate.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(i64::from(days));
}

impl Ca {
    /// Generates a CA valid for `days`.
    pub fn generate(common_name: &str, days: u32) -> Result<Ca, CertError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, days);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its certificate and private key (PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, CertError> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(Ca {
            issuer: Issuer::from_ca_cert_pem(cert_pem, key)?,
            cert_pem: cert_pem.to_owned(),
        })
    }

    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a serving certificate for the given DNS names and IP addresses, valid for `days`.
    pub fn issue_server(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        days: u32,
    ) -> Result<PemPair, CertError> {
        let now = OffsetDateTime::now_utc();
        self.issue_server_between(
            dns_names,
            ips,
            now - Duration::hours(1),
            now + Duration::days(i64::from(days)),
        )
    }

    /// Issues a serving certificate valid from `not_before` to `not_after`.
    pub fn issue_server_between(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<PemPair, CertError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            dns_names
                .first()
                .map_or("migration-injector", String::as_str),
        );
        params.distinguished_name = dn;
        for name in dns_names {
            let ia5 = name
                .clone()
                .try_into()
                .map_err(|_| CertError::BadName(name.clone()))?;
            params.subject_alt_names.push(SanType::DnsName(ia5));
        }
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(PemPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The DNS names a webhook Service is reached by.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_distinct_certs() {
        let ca = Ca::generate("test CA", 1).unwrap();
        let a = ca
            .issue_server(&["localhost".into()], &["127.0.0.1".parse().unwrap()], 1)
            .unwrap();
        let b = ca.issue_server(&["localhost".into()], &[], 1).unwrap();
        assert!(a.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(a.key_pem.contains("PRIVATE KEY"));
        assert_ne!(a.cert_pem, b.cert_pem);
        assert_eq!(service_dns_names("s", "n")[3], "s.n.svc.cluster.local");
        // A CA read back from PEM issues certificates that chain to the same CA.
        let again = Ca::from_pem(&ca.cert_pem(), &ca.key_pem()).unwrap();
        let c = again.issue_server(&["x".into()], &[], 1).unwrap();
        let leaf = rustls::pki_types::CertificateDer::from(pem_der(&c.cert_pem));
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
        let ca_der = pem_der(&ca.cert_pem());
        let (_, ca_parsed) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert_eq!(parsed.issuer(), ca_parsed.subject());
        parsed
            .verify_signature(Some(ca_parsed.public_key()))
            .unwrap();
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }
}
