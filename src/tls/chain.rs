//! Certificates as the caBundle protocol and readiness see them: PEM ⇄ DER, a CA's short
//! fingerprint, which CAs of a bundle a served chain leads to, and the one validity-window check.
//! Pure: no I/O.

use base64::Engine as _;
use rustls::pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;

use super::store::CertStore;

/// The certificates of a PEM text, in order; what is not a certificate is skipped.
pub(crate) fn pem_ders(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

/// The first certificate of a PEM text (empty when there is none).
pub(crate) fn der_of(pem: &str) -> Vec<u8> {
    pem_ders(pem.as_bytes())
        .into_iter()
        .next()
        .map(|d| d.to_vec())
        .unwrap_or_default()
}

/// One certificate as PEM, 64 columns, as a caBundle holds it.
pub(crate) fn to_pem(der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// A short stable identifier of a CA: the end of its public key (what the records hold).
pub(crate) fn fingerprint(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let key = cert.public_key().subject_public_key.data.as_ref();
    let tail = &key[key.len().saturating_sub(16)..];
    Some(tail.iter().map(|b| format!("{b:02x}")).collect())
}

/// A validity window `now` (Unix time) falls outside of, as the certificate states it.
#[derive(Debug)]
pub(crate) struct OutsideWindow {
    pub(crate) not_before: String,
    pub(crate) not_after: String,
}

/// Whether `cert` is valid at `now`: not expired, and not starting more than a minute ahead
/// (clock skew between the issuer and us).
pub(crate) fn check_window(cert: &X509Certificate<'_>, now: i64) -> Result<(), OutsideWindow> {
    let validity = cert.validity();
    if validity.not_after.timestamp() <= now || validity.not_before.timestamp() > now + 60 {
        return Err(OutsideWindow {
            not_before: validity.not_before.to_string(),
            not_after: validity.not_after.to_string(),
        });
    }
    Ok(())
}

/// Whether the served chain leads to one of `bundle`'s CAs: what the API server checks.
pub(crate) fn trusted_by(store: &CertStore, bundle: &[CertificateDer<'_>]) -> bool {
    !anchors(&store.chain(), bundle).is_empty()
}

/// The CAs of `bundle` that the certificate chain `chain` (leaf first, then the intermediates a
/// server sends) leads to, by signatures: what a TLS client with `bundle` as its roots accepts.
/// Expiry is not checked here (the store refuses expired certificates).
pub(crate) fn anchors(chain: &[CertificateDer<'_>], bundle: &[CertificateDer<'_>]) -> Vec<Vec<u8>> {
    fn parse(d: &[u8]) -> Option<X509Certificate<'_>> {
        x509_parser::parse_x509_certificate(d).ok().map(|(_, c)| c)
    }
    let chain: Vec<X509Certificate<'_>> = chain.iter().filter_map(|c| parse(c.as_ref())).collect();
    let roots: Vec<(&[u8], X509Certificate<'_>)> = bundle
        .iter()
        .filter_map(|c| Some((c.as_ref(), parse(c.as_ref())?)))
        .collect();
    let Some(mut current) = chain.first() else {
        return Vec::new();
    };
    // At most one step per certificate of the chain: a chain that loops ends here.
    for _ in 0..=chain.len() {
        let signed = |issuer: &X509Certificate<'_>| {
            current.verify_signature(Some(issuer.public_key())).is_ok()
        };
        let found: Vec<Vec<u8>> = roots
            .iter()
            .filter(|(_, ca)| signed(ca))
            .map(|(der, _)| der.to_vec())
            .collect();
        if !found.is_empty() {
            return found;
        }
        match chain[1..].iter().find(|c| signed(c)) {
            Some(next) if !std::ptr::eq(next, current) => current = next,
            _ => return Vec::new(),
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ca::Ca;

    /// A CA, signed by `parent` or self-signed.
    fn ca(
        name: &str,
        parent: Option<&rcgen::Issuer<'static, rcgen::KeyPair>>,
    ) -> (Vec<u8>, rcgen::Issuer<'static, rcgen::KeyPair>) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let cert = match parent {
            Some(p) => params.signed_by(&key, p),
            None => params.self_signed(&key),
        }
        .expect("cert");
        (cert.der().to_vec(), rcgen::Issuer::new(params, key))
    }

    fn leaf(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["svc.ns.svc".to_owned()]).expect("params");
        params.signed_by(&key, issuer).expect("leaf").der().to_vec()
    }

    fn der(d: &[u8]) -> CertificateDer<'static> {
        CertificateDer::from(d.to_vec())
    }

    #[test]
    fn a_chain_leads_to_the_root_through_the_intermediates_it_carries() {
        let (root, root_issuer) = ca("root", None);
        let (inter, inter_issuer) = ca("intermediate", Some(&root_issuer));
        let (other, _) = ca("other", None);
        let served = leaf(&inter_issuer);
        // cert-manager with an intermediate CA: ca.crt is the root, tls.crt is leaf + intermediate.
        let bundle = [der(&other), der(&root)];
        assert_eq!(
            anchors(&[der(&served), der(&inter)], &bundle),
            vec![root.clone()]
        );
        // Without the intermediate the chain does not lead anywhere (a client could not build it).
        assert!(anchors(&[der(&served)], &bundle).is_empty());
        // Directly under a CA of the bundle.
        assert_eq!(
            anchors(&[der(&served)], &[der(&inter)]),
            vec![inter.clone()]
        );
        // A bundle without its CAs.
        assert!(anchors(&[der(&served), der(&inter)], &[der(&other)]).is_empty());
        assert!(anchors(&[], &bundle).is_empty());
    }

    #[test]
    fn pem_round_trips_and_fingerprints_are_stable() {
        let a = der_of(&Ca::generate("a", 1).unwrap().cert_pem());
        let b = der_of(&Ca::generate("b", 1).unwrap().cert_pem());
        let pem: String = [&a, &b].iter().map(|d| to_pem(d)).collect();
        let back = pem_ders(pem.as_bytes());
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].as_ref(), a.as_slice());
        assert_eq!(back[1].as_ref(), b.as_slice());
        assert_eq!(fingerprint(&a), fingerprint(&a));
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_eq!(fingerprint(&a).map(|f| f.len()), Some(32));
        assert_eq!(fingerprint(b"not a certificate"), None);
        assert!(der_of("no PEM here").is_empty());
    }

    #[test]
    fn the_window_allows_a_minute_of_skew_and_nothing_past_expiry() {
        let ca = Ca::generate("w", 1).unwrap();
        let d = der_of(&ca.cert_pem());
        let (_, cert) = x509_parser::parse_x509_certificate(&d).unwrap();
        let from = cert.validity().not_before.timestamp();
        let to = cert.validity().not_after.timestamp();
        assert!(check_window(&cert, from).is_ok());
        assert!(check_window(&cert, from - 60).is_ok(), "a minute early");
        assert!(check_window(&cert, from - 61).is_err());
        assert!(check_window(&cert, to - 1).is_ok());
        let outside = check_window(&cert, to).unwrap_err();
        assert_eq!(outside.not_after, cert.validity().not_after.to_string());
    }
}
