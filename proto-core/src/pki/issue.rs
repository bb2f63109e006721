//! Certificate profiles and signing. The caller brings every input that
//! would otherwise need I/O: keys, the validity start and the serial.

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm, PKCS_ED25519,
};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};

use super::naming::{self, NameError};
use super::{ed25519_key_pair, ed25519_public_key, PkiError};

/// Bytes of a certificate serial number as the caller draws it.
pub const SERIAL_LEN: usize = 16;
/// Longest validity accepted, about a century.
pub const MAX_VALIDITY_DAYS: u32 = 36_525;
/// 9999-12-31T23:59:59Z, the last instant an X.509 time can express.
const MAX_UNIX_S: i64 = 253_402_300_799;
/// Longest root common name (X.520 `ub-common-name`).
const MAX_ROOT_NAME_LEN: usize = 64;
/// The organisation every certificate of the mesh names.
const ORGANIZATION: &str = "Transitloom";

/// A raw Ed25519 public key, the subject key of a certificate to issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ed25519PublicKey(pub [u8; 32]);

impl PublicKeyData for Ed25519PublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ED25519
    }
}

/// What a certificate says beyond its profile: whom it names, when it is
/// valid and its serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertTerms<'a> {
    /// The subject's name (node, coordinator, admin or root name).
    pub name: &'a str,
    /// Start of validity, seconds since the Unix epoch (UTC).
    pub not_before_unix_s: i64,
    /// Length of validity in days (1 ..= [`MAX_VALIDITY_DAYS`]).
    pub validity_days: u32,
    /// Serial bytes drawn by the caller; the top two bits are forced to
    /// `01` so it encodes as a positive 16-byte integer (126 random bits).
    pub serial: [u8; SERIAL_LEN],
}

impl CertTerms<'_> {
    fn apply(&self, params: &mut CertificateParams) -> Result<(), PkiError> {
        if !(0..=MAX_UNIX_S).contains(&self.not_before_unix_s) {
            return Err(PkiError::InvalidValidity(
                "the start must lie between 1970 and 9999",
            ));
        }
        if !(1..=MAX_VALIDITY_DAYS).contains(&self.validity_days) {
            return Err(PkiError::InvalidValidity(
                "the length must be between 1 and 36525 days",
            ));
        }
        apply_window(
            params,
            self.not_before_unix_s,
            u64::from(self.validity_days) * 86_400,
            self.serial,
        )
    }
}

/// Sets the validity (`start` for `length_s` seconds) and the serial.
fn apply_window(
    params: &mut CertificateParams,
    start: i64,
    length_s: u64,
    serial: [u8; SERIAL_LEN],
) -> Result<(), PkiError> {
    if !(0..=MAX_UNIX_S).contains(&start) {
        return Err(PkiError::InvalidValidity(
            "the start must lie between 1970 and 9999",
        ));
    }
    if length_s == 0 {
        return Err(PkiError::InvalidValidity("the length must not be zero"));
    }
    let start = start.unsigned_abs();
    let end = start.saturating_add(length_s);
    if end > MAX_UNIX_S.unsigned_abs() {
        return Err(PkiError::InvalidValidity("the end lies after 9999"));
    }
    // Whole seconds after the epoch, within the bounds checked above, so
    // the additions cannot overflow.
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + std::time::Duration::from_secs(start);
    params.not_after = epoch + std::time::Duration::from_secs(end);
    let mut serial = serial;
    serial[0] = (serial[0] & 0x3F) | 0x40;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(())
}

fn invalid_name(name: &str) -> impl FnOnce(NameError) -> PkiError + '_ {
    move |source| PkiError::InvalidName {
        name: name.to_owned(),
        source,
    }
}

fn distinguished_name(common_name: &str, unit: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    if let Some(unit) = unit {
        dn.push(DnType::OrganizationalUnitName, unit);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

fn dns(name: String) -> Result<SanType, PkiError> {
    // Names are validated before they get here; this only maps the type.
    Ia5String::try_from(name)
        .map(SanType::DnsName)
        .map_err(|e| PkiError::Signing(e.to_string()))
}

fn leaf_params(
    terms: &CertTerms<'_>,
    unit: &str,
    sans: Vec<SanType>,
    usage: &[ExtendedKeyUsagePurpose],
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    terms.apply(&mut params)?;
    params.distinguished_name = distinguished_name(terms.name, Some(unit));
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usage.to_vec();
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn ca_key_usages() -> Vec<KeyUsagePurpose> {
    vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ]
}

/// An issuer from its certificate and the matching private key.
fn issuer(cert_der: &[u8], key_pkcs8: &[u8]) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let key = ed25519_key_pair(key_pkcs8)?;
    let cert_key =
        ed25519_public_key(cert_der).map_err(|e| PkiError::InvalidIssuerCert(e.to_string()))?;
    if key.public_key_raw() != cert_key {
        return Err(PkiError::IssuerKeyMismatch);
    }
    Issuer::from_ca_cert_der(&CertificateDer::from(cert_der), key)
        .map_err(|e| PkiError::InvalidIssuerCert(e.to_string()))
}

fn sign(
    params: &CertificateParams,
    subject: &Ed25519PublicKey,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<Vec<u8>, PkiError> {
    params
        .signed_by(subject, issuer)
        .map(|cert| cert.der().to_vec())
        .map_err(|e| PkiError::Signing(e.to_string()))
}

/// A self-signed root CA certificate for `key_pkcs8` (Ed25519), named
/// `terms.name` (free text up to 64 bytes, e.g. `transitloom root`), allowed
/// one intermediate below it.
///
/// # Errors
/// A bad key, name or validity.
pub fn self_signed_root(key_pkcs8: &[u8], terms: &CertTerms<'_>) -> Result<Vec<u8>, PkiError> {
    let name = terms.name;
    let check = || {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_ROOT_NAME_LEN {
            return Err(NameError::TooLong {
                max: MAX_ROOT_NAME_LEN,
            });
        }
        match name.chars().find(|c| c.is_control()) {
            Some(bad) => Err(NameError::BadCharacter(bad)),
            None => Ok(()),
        }
    };
    check().map_err(invalid_name(name))?;
    let key = ed25519_key_pair(key_pkcs8)?;
    let mut params = CertificateParams::default();
    terms.apply(&mut params)?;
    params.distinguished_name = distinguished_name(name, None);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = ca_key_usages();
    params
        .self_signed(&key)
        .map(|cert| cert.der().to_vec())
        .map_err(|e| PkiError::Signing(e.to_string()))
}

/// A coordinator's intermediate CA certificate, signed by the root: path
/// length 0, and name-constrained to node identities and the
/// coordinator's own names.
///
/// # Errors
/// A bad coordinator name, root certificate or key, or validity.
pub fn sign_coordinator_intermediate(
    root_cert_der: &[u8],
    root_key_pkcs8: &[u8],
    subject: &Ed25519PublicKey,
    terms: &CertTerms<'_>,
) -> Result<Vec<u8>, PkiError> {
    let name = terms.name;
    naming::validate_coordinator_name(name).map_err(invalid_name(name))?;
    let issuer = issuer(root_cert_der, root_key_pkcs8)?;
    let mut params = CertificateParams::default();
    terms.apply(&mut params)?;
    params.distinguished_name =
        distinguished_name(&format!("{name} intermediate"), Some("coordinator"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = ca_key_usages();
    params.name_constraints = Some(NameConstraints {
        permitted_subtrees: vec![
            GeneralSubtree::DnsName(naming::NODE_DOMAIN.to_owned()),
            GeneralSubtree::DnsName(name.to_owned()),
            GeneralSubtree::DnsName(naming::coordinator_dns_name(name)),
        ],
        excluded_subtrees: Vec::new(),
    });
    params.use_authority_key_identifier_extension = true;
    sign(&params, subject, &issuer)
}

/// A coordinator's TLS server certificate, signed by its intermediate: SANs
/// `NAME` and `NAME.coordinator.transitloom`, server and client auth (it dials
/// the other coordinators of its cluster with it).
///
/// # Errors
/// A bad coordinator name, issuer certificate or key, or validity.
pub fn sign_coordinator_server(
    intermediate_cert_der: &[u8],
    intermediate_key_pkcs8: &[u8],
    subject: &Ed25519PublicKey,
    terms: &CertTerms<'_>,
) -> Result<Vec<u8>, PkiError> {
    let name = terms.name;
    naming::validate_coordinator_name(name).map_err(invalid_name(name))?;
    let issuer = issuer(intermediate_cert_der, intermediate_key_pkcs8)?;
    let sans = vec![
        dns(name.to_owned())?,
        dns(naming::coordinator_dns_name(name))?,
    ];
    // Client auth too: coordinators of one cluster dial each other with
    // their server certificates (DESIGN §4, the replicated log).
    let params = leaf_params(
        terms,
        "coordinator",
        sans,
        &[
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    )?;
    sign(&params, subject, &issuer)
}

/// An admin's client certificate, signed by the root: SAN
/// `NAME.admin.transitloom`, OU `admin`, client auth.
///
/// # Errors
/// A bad admin name, root certificate or key, or validity.
pub fn sign_admin(
    root_cert_der: &[u8],
    root_key_pkcs8: &[u8],
    subject: &Ed25519PublicKey,
    terms: &CertTerms<'_>,
) -> Result<Vec<u8>, PkiError> {
    let name = terms.name;
    naming::validate_admin_name(name).map_err(invalid_name(name))?;
    let issuer = issuer(root_cert_der, root_key_pkcs8)?;
    let sans = vec![dns(naming::admin_dns_name(name))?];
    let params = leaf_params(terms, "admin", sans, &[ExtendedKeyUsagePurpose::ClientAuth])?;
    sign(&params, subject, &issuer)
}

/// A node's client certificate, signed by a coordinator intermediate: CN
/// `NAME`, SAN `NAME.node.transitloom`, client auth, not a CA.
///
/// # Errors
/// A bad node name, issuer certificate or key, or validity.
pub fn sign_node(
    intermediate_cert_der: &[u8],
    intermediate_key_pkcs8: &[u8],
    subject: &Ed25519PublicKey,
    terms: &CertTerms<'_>,
) -> Result<Vec<u8>, PkiError> {
    let name = terms.name;
    naming::validate_node_name(name).map_err(invalid_name(name))?;
    let issuer = issuer(intermediate_cert_der, intermediate_key_pkcs8)?;
    let sans = vec![dns(naming::node_dns_name(name))?];
    let params = leaf_params(terms, "node", sans, &[ExtendedKeyUsagePurpose::ClientAuth])?;
    sign(&params, subject, &issuer)
}

/// Signs a node's certificate signing request with a coordinator
/// intermediate. Only the CSR's (verified) Ed25519 key is used: subject,
/// names, usages and validity come from the coordinator, never from the
/// request. `serial` is drawn by the caller from its
/// [`Drbg`](crate::csprng::Drbg); see [`CertTerms::serial`].
///
/// # Errors
/// [`PkiError::InvalidCsr`] for an unparsable CSR or a bad CSR signature,
/// [`PkiError::CsrKeyNotEd25519`], and the errors of [`sign_node`].
pub fn sign_node_csr(
    issuer_cert_der: &[u8],
    issuer_key_pkcs8: &[u8],
    csr_der: &[u8],
    node_name: &str,
    not_before_unix_s: i64,
    validity_days: u32,
    serial: [u8; SERIAL_LEN],
) -> Result<Vec<u8>, PkiError> {
    naming::validate_node_name(node_name).map_err(invalid_name(node_name))?;
    let key = csr_public_key(csr_der)?;
    let terms = CertTerms {
        name: node_name,
        not_before_unix_s,
        validity_days,
        serial,
    };
    sign_node(issuer_cert_der, issuer_key_pkcs8, &key, &terms)
}

/// As [`sign_node_csr`], with a validity of exactly `lifetime_s` seconds
/// from `not_before_unix_s`: the coordinator's node certificate lifetime is
/// set in seconds, so tests (and cautious operators) can make it short.
///
/// # Errors
/// As [`sign_node_csr`]; a zero lifetime is [`PkiError::InvalidValidity`].
pub fn sign_node_csr_for(
    issuer_cert_der: &[u8],
    issuer_key_pkcs8: &[u8],
    csr_der: &[u8],
    node_name: &str,
    not_before_unix_s: i64,
    lifetime_s: u64,
    serial: [u8; SERIAL_LEN],
) -> Result<Vec<u8>, PkiError> {
    naming::validate_node_name(node_name).map_err(invalid_name(node_name))?;
    let key = csr_public_key(csr_der)?;
    let issuer = issuer(issuer_cert_der, issuer_key_pkcs8)?;
    let sans = vec![dns(naming::node_dns_name(node_name))?];
    let terms = CertTerms {
        name: node_name,
        not_before_unix_s,
        validity_days: 1,
        serial,
    };
    let mut params = leaf_params(&terms, "node", sans, &[ExtendedKeyUsagePurpose::ClientAuth])?;
    apply_window(&mut params, not_before_unix_s, lifetime_s, serial)?;
    sign(&params, &key, &issuer)
}

/// The Ed25519 key of a certificate signing request whose signature
/// verifies: what the coordinator compares with the key a renewing node
/// already holds.
///
/// # Errors
/// [`PkiError::InvalidCsr`] for an unparsable CSR or a bad CSR signature,
/// [`PkiError::CsrKeyNotEd25519`] for another key type.
pub fn csr_public_key(csr_der: &[u8]) -> Result<Ed25519PublicKey, PkiError> {
    let csr =
        CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
            .map_err(|e| PkiError::InvalidCsr(e.to_string()))?;
    if csr.public_key.algorithm() != &PKCS_ED25519 {
        return Err(PkiError::CsrKeyNotEd25519);
    }
    let key: [u8; 32] = PublicKeyData::der_bytes(&csr.public_key)
        .try_into()
        .map_err(|_| PkiError::InvalidCsr("the Ed25519 key is not 32 bytes".to_owned()))?;
    Ok(Ed25519PublicKey(key))
}
