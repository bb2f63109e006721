//! The PKI directories on disk: file names, PEM reading and writing, and
//! durable writes of a set of files.
//!
//! ```text
//! root dir (tlctl pki init-root --out DIR)        keep offline
//!   root.crt          root CA certificate (PEM): every `root_ca`
//!   root.key          root CA private key (PEM PKCS#8, 0600)
//! coordinator pki_dir (tlctl pki issue-coordinator --out DIR)
//!   root.crt          copy of the trust anchor
//!   intermediate.crt  coordinator intermediate CA (PEM), signs node certs
//!   intermediate.key  its private key (0600); also signs admission tokens
//!   server.crt        TLS server certificate (PEM), signed by intermediate.crt
//!   server.key        its private key (0600)
//! admin dir (tlctl pki issue-admin --out DIR)
//!   root.crt          copy of the trust anchor
//!   admin.crt         admin client certificate (PEM), signed by the root
//!   admin.key         its private key (0600)
//! ```
//!
//! Certificates are written 0644, private keys 0600. A set of files is
//! written as temporary files in the target directory (fsynced), then
//! renamed into place, then the directory is fsynced: a crash leaves each
//! file either old or new, never torn.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;
use transitloom_proto_core::pki;

/// The root CA certificate, in every PKI directory.
pub const ROOT_CERT: &str = "root.crt";
/// The root CA private key, only in the root directory.
pub const ROOT_KEY: &str = "root.key";
/// A coordinator's intermediate CA certificate.
pub const INTERMEDIATE_CERT: &str = "intermediate.crt";
/// A coordinator's intermediate CA private key.
pub const INTERMEDIATE_KEY: &str = "intermediate.key";
/// A coordinator's TLS server certificate.
pub const SERVER_CERT: &str = "server.crt";
/// A coordinator's TLS server private key.
pub const SERVER_KEY: &str = "server.key";
/// An admin's client certificate.
pub const ADMIN_CERT: &str = "admin.crt";
/// An admin's client private key.
pub const ADMIN_KEY: &str = "admin.key";

const CERT_LABEL: &str = "CERTIFICATE";
const KEY_LABEL: &str = "PRIVATE KEY";
const CERT_MODE: u32 = 0o644;
const KEY_MODE: u32 = 0o600;
const NEW_DIR_MODE: u32 = 0o700;

/// A failure reading or writing PKI files; every variant names the path.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PkiFileError {
    /// The command line asks for something impossible.
    #[error("{0}")]
    Usage(String),
    /// A file to write exists and `--force` was not given.
    #[error("{}: already exists; pass --force to replace it", .path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// A file or directory to read does not exist.
    #[error("{}: {what} does not exist", .path.display())]
    Missing {
        /// The missing path.
        path: PathBuf,
        /// What was expected there.
        what: &'static str,
    },
    /// A path that must be a directory is something else.
    #[error("{}: not a directory", .path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// A file's contents are unusable.
    #[error("{}: {reason}", .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An I/O operation failed.
    #[error("{}: cannot {action}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// Issuing a certificate failed for a reason unrelated to the inputs.
    #[error("cannot issue {what}: {source}")]
    Issue {
        /// The certificate being issued.
        what: &'static str,
        /// The PKI error.
        source: pki::PkiError,
    },
}

impl PkiFileError {
    /// The process exit code for this error (DESIGN §11): 2 for bad usage
    /// or configuration, 1 for a runtime failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_)
            | Self::Exists { .. }
            | Self::Missing { .. }
            | Self::NotADirectory { .. }
            | Self::Invalid { .. } => 2,
            Self::Io { .. } | Self::Issue { .. } => 1,
        }
    }

    fn io<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> Self + 'a {
        move |source| Self::Io {
            path: path.to_owned(),
            action,
            source,
        }
    }
}

/// A certificate as PEM text.
pub fn cert_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(CERT_LABEL, der))
}

/// A PKCS#8 private key as PEM text.
pub fn key_pem(pkcs8: &[u8]) -> String {
    pem::encode(&pem::Pem::new(KEY_LABEL, pkcs8))
}

/// Checks that `dir` is an existing directory.
///
/// # Errors
/// [`PkiFileError::Missing`] or [`PkiFileError::NotADirectory`] (exit 2),
/// [`PkiFileError::Io`] otherwise.
pub fn require_dir(dir: &Path, what: &'static str) -> Result<(), PkiFileError> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(PkiFileError::NotADirectory {
            path: dir.to_owned(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(PkiFileError::Missing {
            path: dir.to_owned(),
            what,
        }),
        Err(e) => Err(PkiFileError::io(dir, "read")(e)),
    }
}

fn read_pem(path: &Path, label: &str, what: &'static str) -> Result<Vec<u8>, PkiFileError> {
    let text = fs::read(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => PkiFileError::Missing {
            path: path.to_owned(),
            what,
        },
        _ => PkiFileError::io(path, "read")(e),
    })?;
    let invalid = |reason: String| PkiFileError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let block = pem::parse(&text).map_err(|e| invalid(format!("not a PEM file: {e}")))?;
    if block.tag() != label {
        return Err(invalid(format!(
            "holds a PEM {:?} block, expected {label:?}",
            block.tag()
        )));
    }
    Ok(block.into_contents())
}

/// Reads a PEM certificate and returns its DER bytes, checking that it has
/// an Ed25519 key as every certificate of the mesh does.
///
/// # Errors
/// Missing or unreadable file, not PEM, not a certificate, not Ed25519.
pub fn read_cert(path: &Path) -> Result<Vec<u8>, PkiFileError> {
    let der = read_pem(path, CERT_LABEL, "certificate file")?;
    pki::ed25519_public_key(&der).map_err(|e| PkiFileError::Invalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(der)
}

/// Reads a PEM PKCS#8 Ed25519 private key and returns its DER bytes.
///
/// # Errors
/// Missing or unreadable file, not PEM, not an Ed25519 PKCS#8 key.
pub fn read_key(path: &Path) -> Result<Vec<u8>, PkiFileError> {
    let der = read_pem(path, KEY_LABEL, "private key file")?;
    pki::ed25519_key_pair(&der).map_err(|e| PkiFileError::Invalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(der)
}

/// One file of a set to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutFile {
    /// File name inside the directory.
    pub name: &'static str,
    /// Contents.
    pub contents: Vec<u8>,
    /// A private key: mode 0600 instead of 0644.
    pub secret: bool,
}

impl OutFile {
    /// A certificate, written as PEM.
    pub fn cert(name: &'static str, der: &[u8]) -> Self {
        Self {
            name,
            contents: cert_pem(der).into_bytes(),
            secret: false,
        }
    }

    /// A private key, written as PEM, mode 0600.
    pub fn key(name: &'static str, pkcs8: &[u8]) -> Self {
        Self {
            name,
            contents: key_pem(pkcs8).into_bytes(),
            secret: true,
        }
    }
}

/// Checks, before any key is generated, that `dir` can take `names`:
/// either it does not exist yet, or it is a directory in which none of
/// them exists (unless `force`).
///
/// # Errors
/// [`PkiFileError::Exists`] naming the first existing file, or
/// [`PkiFileError::NotADirectory`].
pub fn check_writable(dir: &Path, names: &[&str], force: bool) -> Result<(), PkiFileError> {
    match fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => {
            return Err(PkiFileError::NotADirectory {
                path: dir.to_owned(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(PkiFileError::io(dir, "read")(e)),
        Ok(_) => {}
    }
    if force {
        return Ok(());
    }
    for name in names {
        let path = dir.join(name);
        match fs::symlink_metadata(&path) {
            Ok(_) => return Err(PkiFileError::Exists { path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(PkiFileError::io(&path, "read")(e)),
        }
    }
    Ok(())
}

/// Writes every file of `files` into `dir` (created 0700 if missing),
/// durably: all temporary files first, then the renames, then an fsync of
/// the directory. Existing files are replaced only with `force`.
///
/// # Errors
/// [`PkiFileError::Exists`] (nothing written) or the first I/O failure
/// (temporary files are removed).
pub fn write_set(dir: &Path, files: &[OutFile], force: bool) -> Result<Vec<PathBuf>, PkiFileError> {
    let names: Vec<&str> = files.iter().map(|f| f.name).collect();
    check_writable(dir, &names, force)?;
    DirBuilder::new()
        .recursive(true)
        .mode(NEW_DIR_MODE)
        .create(dir)
        .map_err(PkiFileError::io(dir, "create the directory"))?;

    let mut temps = Vec::with_capacity(files.len());
    let result = (|| {
        for file in files {
            let temp = dir.join(format!(".{}.tmp-{}", file.name, std::process::id()));
            temps.push(temp.clone());
            write_temp(&temp, file)?;
        }
        let mut written = Vec::with_capacity(files.len());
        for (file, temp) in files.iter().zip(&temps) {
            let path = dir.join(file.name);
            // Re-checked just before the rename, narrowing the window in
            // which another process could have created the file.
            if !force && fs::symlink_metadata(&path).is_ok() {
                return Err(PkiFileError::Exists { path });
            }
            fs::rename(temp, &path).map_err(PkiFileError::io(&path, "rename into place"))?;
            written.push(path);
        }
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(PkiFileError::io(dir, "sync the directory"))?;
        Ok(written)
    })();
    if result.is_err() {
        for temp in &temps {
            let _ = fs::remove_file(temp);
        }
    }
    result
}

fn write_temp(temp: &Path, file: &OutFile) -> Result<(), PkiFileError> {
    let mode = if file.secret { KEY_MODE } else { CERT_MODE };
    // A temporary file left by a crashed run of the same pid is stale.
    match fs::remove_file(temp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(PkiFileError::io(temp, "remove a stale temporary file")(e))
        }
        _ => {}
    }
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(temp)
        .map_err(PkiFileError::io(temp, "create"))?;
    // The umask can only clear bits; set the mode exactly anyway.
    out.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(PkiFileError::io(temp, "set the mode of"))?;
    out.write_all(&file.contents)
        .map_err(PkiFileError::io(temp, "write"))?;
    out.sync_all().map_err(PkiFileError::io(temp, "sync"))
}
