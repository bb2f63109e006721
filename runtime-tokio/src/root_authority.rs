//! The file-based root authority behind `tlctl pki` (DESIGN §1, §4, §11):
//! creates the root CA, issues coordinator intermediates with their TLS
//! server certificates, and issues admin certificates. Keys are fresh
//! Ed25519 keys from the operating system's generator; the certificate
//! profiles are proto-core's ([`transitloom_proto_core::pki`]). See
//! [`crate::pki_files`] for what each directory holds.

use std::path::{Path, PathBuf};

use rcgen::{KeyPair, PKCS_ED25519};
use ring::rand::{SecureRandom, SystemRandom};
use transitloom_proto_core::pki::{self, naming, CertTerms, Ed25519PublicKey, PkiError};

use crate::pki_files::{
    check_writable, read_cert, read_key, require_dir, write_set, OutFile, PkiFileError, ADMIN_CERT,
    ADMIN_KEY, INTERMEDIATE_CERT, INTERMEDIATE_KEY, ROOT_CERT, ROOT_KEY, SERVER_CERT, SERVER_KEY,
};

/// Default lifetime of a root CA, in days.
pub const ROOT_DAYS: u32 = 3650;
/// Default lifetime of a coordinator's intermediate and server certificates.
pub const COORDINATOR_DAYS: u32 = 1095;
/// Default lifetime of an admin certificate.
pub const ADMIN_DAYS: u32 = 365;
/// Default common name of a root CA.
pub const ROOT_NAME: &str = "transitloom root";
/// Certificates start this long before they are issued, so a peer whose
/// clock is a little behind accepts them at once.
pub const BACKDATE_S: i64 = 300;

/// What one command wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// Every file written, in order.
    pub files: Vec<PathBuf>,
    /// SHA-256 of the main certificate issued (root, intermediate or admin).
    pub fingerprint: [u8; 32],
}

/// A key for a new certificate: its PKCS#8 DER and raw public key.
struct FreshKey {
    pkcs8: Vec<u8>,
    public: Ed25519PublicKey,
}

fn fresh_key(what: &'static str) -> Result<FreshKey, PkiFileError> {
    let key = KeyPair::generate_for(&PKCS_ED25519).map_err(|e| PkiFileError::Issue {
        what,
        source: PkiError::Signing(format!("key generation failed: {e}")),
    })?;
    let public = key
        .public_key_raw()
        .try_into()
        .map(Ed25519PublicKey)
        .map_err(|_| PkiFileError::Issue {
            what,
            source: PkiError::NotEd25519,
        })?;
    Ok(FreshKey {
        pkcs8: key.serialize_der(),
        public,
    })
}

fn serial(what: &'static str) -> Result<[u8; pki::SERIAL_LEN], PkiFileError> {
    let mut serial = [0u8; pki::SERIAL_LEN];
    SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| PkiFileError::Issue {
            what,
            source: PkiError::Signing("the system random generator failed".to_owned()),
        })?;
    Ok(serial)
}

fn usage_name(
    role: &str,
    name: &str,
    check: fn(&str) -> Result<(), naming::NameError>,
) -> Result<(), PkiFileError> {
    check(name).map_err(|e| PkiFileError::Usage(format!("invalid {role} name {name:?}: {e}")))
}

/// Maps an issuing error to the file it is about when it comes from the
/// issuer's files, otherwise to a runtime failure.
fn issue_error<'a>(
    root: &'a Path,
    what: &'static str,
) -> impl FnOnce(PkiError) -> PkiFileError + 'a {
    move |source| match source {
        PkiError::IssuerKeyMismatch => PkiFileError::Invalid {
            path: root.join(ROOT_KEY),
            reason: format!("does not belong to {}", root.join(ROOT_CERT).display()),
        },
        PkiError::InvalidIssuerKey(reason) => PkiFileError::Invalid {
            path: root.join(ROOT_KEY),
            reason,
        },
        PkiError::InvalidIssuerCert(reason) => PkiFileError::Invalid {
            path: root.join(ROOT_CERT),
            reason,
        },
        PkiError::InvalidName { .. } | PkiError::InvalidValidity(_) => {
            PkiFileError::Usage(format!("cannot issue {what}: {source}"))
        }
        source => PkiFileError::Issue { what, source },
    }
}

/// The root's certificate and key, from `root_dir`.
fn load_root(root_dir: &Path) -> Result<(Vec<u8>, Vec<u8>), PkiFileError> {
    require_dir(root_dir, "root directory")?;
    Ok((
        read_cert(&root_dir.join(ROOT_CERT))?,
        read_key(&root_dir.join(ROOT_KEY))?,
    ))
}

/// `tlctl pki init-root`: a new root CA in `out`.
///
/// # Errors
/// Existing files without `force`, a bad name or validity (exit 2), and
/// I/O failures (exit 1).
pub fn init_root(
    out: &Path,
    name: &str,
    days: u32,
    force: bool,
    now_unix_s: i64,
) -> Result<Issued, PkiFileError> {
    check_writable(out, &[ROOT_CERT, ROOT_KEY], force)?;
    let key = fresh_key("the root certificate")?;
    let terms = CertTerms {
        name,
        not_before_unix_s: now_unix_s - BACKDATE_S,
        validity_days: days,
        serial: serial("the root certificate")?,
    };
    let cert = pki::self_signed_root(&key.pkcs8, &terms)
        .map_err(issue_error(out, "the root certificate"))?;
    let files = [
        OutFile::cert(ROOT_CERT, &cert),
        OutFile::key(ROOT_KEY, &key.pkcs8),
    ];
    Ok(Issued {
        files: write_set(out, &files, force)?,
        fingerprint: pki::cert_fingerprint(&cert),
    })
}

/// `tlctl pki issue-coordinator`: an intermediate CA and a TLS server
/// certificate for coordinator `name`, plus a copy of the root certificate,
/// in `out` (the coordinator's `pki_dir`).
///
/// # Errors
/// A missing or unusable root directory, existing files without `force`,
/// a bad name or validity (exit 2), and I/O failures (exit 1).
pub fn issue_coordinator(
    root_dir: &Path,
    name: &str,
    out: &Path,
    days: u32,
    force: bool,
    now_unix_s: i64,
) -> Result<Issued, PkiFileError> {
    usage_name("coordinator", name, naming::validate_coordinator_name)?;
    let (root_cert, root_key) = load_root(root_dir)?;
    let names = [
        INTERMEDIATE_CERT,
        INTERMEDIATE_KEY,
        SERVER_CERT,
        SERVER_KEY,
        ROOT_CERT,
    ];
    check_writable(out, &names, force)?;
    let not_before_unix_s = now_unix_s - BACKDATE_S;

    let what = "the coordinator intermediate";
    let inter = fresh_key(what)?;
    let terms = CertTerms {
        name,
        not_before_unix_s,
        validity_days: days,
        serial: serial(what)?,
    };
    let inter_cert =
        pki::sign_coordinator_intermediate(&root_cert, &root_key, &inter.public, &terms)
            .map_err(issue_error(root_dir, what))?;

    let what = "the coordinator server certificate";
    let server = fresh_key(what)?;
    let terms = CertTerms {
        serial: serial(what)?,
        ..terms
    };
    let server_cert =
        pki::sign_coordinator_server(&inter_cert, &inter.pkcs8, &server.public, &terms)
            .map_err(|source| PkiFileError::Issue { what, source })?;

    let files = [
        OutFile::cert(INTERMEDIATE_CERT, &inter_cert),
        OutFile::key(INTERMEDIATE_KEY, &inter.pkcs8),
        OutFile::cert(SERVER_CERT, &server_cert),
        OutFile::key(SERVER_KEY, &server.pkcs8),
        OutFile::cert(ROOT_CERT, &root_cert),
    ];
    Ok(Issued {
        files: write_set(out, &files, force)?,
        fingerprint: pki::cert_fingerprint(&inter_cert),
    })
}

/// `tlctl pki issue-admin`: an admin client certificate signed by the
/// root, plus a copy of the root certificate, in `out`.
///
/// # Errors
/// A missing or unusable root directory, existing files without `force`,
/// a bad name or validity (exit 2), and I/O failures (exit 1).
pub fn issue_admin(
    root_dir: &Path,
    name: &str,
    out: &Path,
    days: u32,
    force: bool,
    now_unix_s: i64,
) -> Result<Issued, PkiFileError> {
    usage_name("admin", name, naming::validate_admin_name)?;
    let (root_cert, root_key) = load_root(root_dir)?;
    check_writable(out, &[ADMIN_CERT, ADMIN_KEY, ROOT_CERT], force)?;
    let what = "the admin certificate";
    let admin = fresh_key(what)?;
    let terms = CertTerms {
        name,
        not_before_unix_s: now_unix_s - BACKDATE_S,
        validity_days: days,
        serial: serial(what)?,
    };
    let cert = pki::sign_admin(&root_cert, &root_key, &admin.public, &terms)
        .map_err(issue_error(root_dir, what))?;
    let files = [
        OutFile::cert(ADMIN_CERT, &cert),
        OutFile::key(ADMIN_KEY, &admin.pkcs8),
        OutFile::cert(ROOT_CERT, &root_cert),
    ];
    Ok(Issued {
        files: write_set(out, &files, force)?,
        fingerprint: pki::cert_fingerprint(&cert),
    })
}

/// A fingerprint as lowercase hex pairs separated by colons.
pub fn fingerprint_hex(fingerprint: &[u8; 32]) -> String {
    fingerprint
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
