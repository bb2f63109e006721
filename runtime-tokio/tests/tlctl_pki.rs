//! `tlctl pki …` end to end: runs the built binary in temporary
//! directories and checks the files it writes with rustls's own verifiers.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, KeyPair, PKCS_ED25519};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use transitloom_proto_core::control::token::{TokenError, TokenSigner, TokenVerifier};
use transitloom_proto_core::pki;
use transitloom_runtime_tokio::pki_files::{read_cert, read_key};

fn tlctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tlctl"))
        .args(args)
        .output()
        .expect("tlctl runs")
}

fn ok(args: &[&str]) -> String {
    let out = tlctl(args);
    assert!(
        out.status.success(),
        "tlctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails_with(code: i32, args: &[&str]) -> String {
    let out = tlctl(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "tlctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stderr).unwrap()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn now() -> UnixTime {
    UnixTime::now()
}

fn now_unix_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

fn der(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from(read_cert(path).unwrap())
}

fn roots(root_crt: &Path) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(der(root_crt)).unwrap();
    Arc::new(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn verify_client(
    root_crt: &Path,
    leaf: &CertificateDer<'_>,
    chain: &[CertificateDer<'_>],
) -> Result<(), rustls::Error> {
    WebPkiClientVerifier::builder_with_provider(roots(root_crt), provider())
        .build()
        .unwrap()
        .verify_client_cert(leaf, chain, now())
        .map(|_| ())
}

fn verify_server(
    root_crt: &Path,
    leaf: &CertificateDer<'_>,
    chain: &[CertificateDer<'_>],
    name: &str,
) -> Result<(), rustls::Error> {
    WebPkiServerVerifier::builder_with_provider(roots(root_crt), provider())
        .build()
        .unwrap()
        .verify_server_cert(
            leaf,
            chain,
            &ServerName::try_from(name.to_owned()).unwrap(),
            &[],
            now(),
        )
        .map(|_| ())
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file of a directory with its bytes, sorted by name.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn the_whole_chain_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, coord, admin) = (
        tmp.path().join("root"),
        tmp.path().join("coord-1"),
        tmp.path().join("admin"),
    );
    let out = ok(&["pki", "init-root", "--out", s(&root)]);
    assert!(out.contains("root.crt") && out.contains("SHA-256"), "{out}");
    ok(&[
        "pki",
        "issue-coordinator",
        "--root",
        s(&root),
        "--name",
        "coord-1",
        "--out",
        s(&coord),
    ]);
    ok(&[
        "pki",
        "issue-admin",
        "--root",
        s(&root),
        "--name",
        "ops",
        "--out",
        s(&admin),
        "--days",
        "30",
    ]);

    // Layout and modes.
    let names = |dir: &Path| -> Vec<String> { snapshot(dir).into_iter().map(|f| f.0).collect() };
    assert_eq!(names(&root), ["root.crt", "root.key"]);
    assert_eq!(
        names(&coord),
        [
            "intermediate.crt",
            "intermediate.key",
            "root.crt",
            "server.crt",
            "server.key"
        ]
    );
    assert_eq!(names(&admin), ["admin.crt", "admin.key", "root.crt"]);
    for key in [
        root.join("root.key"),
        coord.join("intermediate.key"),
        coord.join("server.key"),
        admin.join("admin.key"),
    ] {
        assert_eq!(mode(&key), 0o600, "{}", key.display());
    }
    assert_eq!(mode(&coord.join("server.crt")), 0o644);
    let root_crt = root.join("root.crt");
    assert_eq!(
        fs::read(&root_crt).unwrap(),
        fs::read(coord.join("root.crt")).unwrap()
    );
    assert_eq!(
        fs::read(&root_crt).unwrap(),
        fs::read(admin.join("root.crt")).unwrap()
    );

    // The coordinator's server certificate, through its intermediate.
    let inter = der(&coord.join("intermediate.crt"));
    let server = der(&coord.join("server.crt"));
    for name in ["coord-1", "coord-1.coordinator.transitloom"] {
        verify_server(&root_crt, &server, std::slice::from_ref(&inter), name).unwrap();
    }
    assert!(verify_server(&root_crt, &server, std::slice::from_ref(&inter), "coord-2").is_err());
    assert!(verify_server(&root_crt, &server, &[], "coord-1").is_err());
    // It is a client certificate too (coordinators of a cluster dial each
    // other with it), naming a coordinator, never a node or an admin.
    verify_client(&root_crt, &server, std::slice::from_ref(&inter)).unwrap();
    assert!(pki::node_name_of(&server).is_err());
    assert!(pki::admin_name_of(&server).is_err());

    // The admin, signed by the root directly.
    let admin_crt = der(&admin.join("admin.crt"));
    verify_client(&root_crt, &admin_crt, &[]).unwrap();
    assert_eq!(pki::admin_name_of(&admin_crt).unwrap(), "ops");

    // A node: key made locally, CSR signed with the intermediate.
    let node_key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let csr = CertificateParams::default()
        .serialize_request(&node_key)
        .unwrap();
    let inter_key = read_key(&coord.join("intermediate.key")).unwrap();
    let serial = [0x5A; pki::SERIAL_LEN];
    let node = pki::sign_node_csr(
        &inter,
        &inter_key,
        csr.der(),
        "alpha",
        now_unix_s() - 60,
        30,
        serial,
    )
    .unwrap();
    let node = CertificateDer::from(node);
    verify_client(&root_crt, &node, std::slice::from_ref(&inter)).unwrap();
    assert!(verify_client(&root_crt, &node, &[]).is_err());
    assert_eq!(pki::node_name_of(&node).unwrap(), "alpha");

    // A token signed with intermediate.key verifies with the key in
    // intermediate.crt, and only with it.
    let signer = TokenSigner::from_pkcs8(&inter_key, "coord-1").unwrap();
    let t = now_unix_s().unsigned_abs();
    let fingerprint = pki::cert_fingerprint(&node);
    let token = signer
        .sign(&signer.claims(1, "alpha", fingerprint, 1, t))
        .unwrap();
    let mut verifier = TokenVerifier::new();
    verifier.trust("coord-1", pki::ed25519_public_key(&inter).unwrap());
    let claims = verifier.verify(&token, t, &fingerprint, 1).unwrap();
    assert_eq!(claims.node, "alpha");
    let mut other = TokenVerifier::new();
    other.trust("coord-1", pki::ed25519_public_key(&server).unwrap());
    assert_eq!(
        other.verify(&token, t, &fingerprint, 1),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn existing_files_are_kept_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let coord = tmp.path().join("pki");
    ok(&["pki", "init-root", "--out", s(&root)]);
    let before = snapshot(&root);
    let err = fails_with(2, &["pki", "init-root", "--out", s(&root)]);
    assert!(
        err.contains(s(&root.join("root.crt"))) && err.contains("--force"),
        "{err}"
    );
    assert_eq!(snapshot(&root), before, "nothing changed");

    let issue = |extra: &[&str]| {
        let mut args = vec![
            "pki",
            "issue-coordinator",
            "--root",
            s(&root),
            "--name",
            "coord-1",
            "--out",
            s(&coord),
        ];
        args.extend_from_slice(extra);
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| tlctl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(run(issue(&[])).status.success());
    let issued = snapshot(&coord);
    // A single existing file is enough to refuse, and names that file.
    fs::remove_file(coord.join("server.crt")).unwrap();
    fs::remove_file(coord.join("server.key")).unwrap();
    let out = run(issue(&[]));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("intermediate.crt"), "{err}");
    assert!(!coord.join("server.crt").exists(), "nothing written");

    let out = run(issue(&["--force"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replaced = snapshot(&coord);
    assert_eq!(replaced.len(), 5);
    assert_ne!(replaced[0], issued[0], "a fresh intermediate");
    assert_eq!(mode(&coord.join("intermediate.key")), 0o600);
    // No temporary files are left behind.
    assert!(replaced.iter().all(|(name, _)| !name.starts_with('.')));

    // --force on the root makes a new root; the old coordinator no longer
    // chains to it.
    ok(&["pki", "init-root", "--out", s(&root), "--force"]);
    assert_ne!(snapshot(&root), before);
    let inter = der(&coord.join("intermediate.crt"));
    let server = der(&coord.join("server.crt"));
    assert!(verify_server(&root.join("root.crt"), &server, &[inter], "coord-1").is_err());
}

#[test]
fn bad_inputs_exit_2_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-root");
    let out_dir = tmp.path().join("out");
    for command in ["issue-coordinator", "issue-admin"] {
        let err = fails_with(
            2,
            &[
                "pki",
                command,
                "--root",
                s(&missing),
                "--name",
                "x",
                "--out",
                s(&out_dir),
            ],
        );
        assert!(err.contains(s(&missing)), "{err}");
        assert!(!out_dir.exists(), "nothing created");
    }

    // A root directory without its key.
    let root = tmp.path().join("root");
    ok(&["pki", "init-root", "--out", s(&root)]);
    let args = |name: &'static str| {
        vec![
            "pki".to_owned(),
            "issue-admin".to_owned(),
            "--root".to_owned(),
            s(&root).to_owned(),
            "--name".to_owned(),
            name.to_owned(),
            "--out".to_owned(),
            s(&out_dir).to_owned(),
        ]
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        fails_with(2, &a)
    };
    let err = run(args("Not-Valid"));
    assert!(err.contains("invalid admin name"), "{err}");
    fs::write(root.join("root.key"), "not a key").unwrap();
    let err = run(args("ops"));
    assert!(err.contains(s(&root.join("root.key"))), "{err}");
    fs::remove_file(root.join("root.key")).unwrap();
    let err = run(args("ops"));
    assert!(
        err.contains(s(&root.join("root.key"))) && err.contains("does not exist"),
        "{err}"
    );
    // A key from another root.
    let other = tmp.path().join("other");
    ok(&["pki", "init-root", "--out", s(&other)]);
    fs::copy(other.join("root.key"), root.join("root.key")).unwrap();
    let err = run(args("ops"));
    assert!(err.contains("does not belong"), "{err}");

    // An output path that is a file.
    let file = tmp.path().join("file");
    fs::write(&file, "").unwrap();
    let err = fails_with(2, &["pki", "init-root", "--out", s(&file)]);
    assert!(
        err.contains(s(&file)) && err.contains("not a directory"),
        "{err}"
    );

    fails_with(2, &["pki", "init-root"]);
    fails_with(2, &["pki", "init-root", "--out", "x", "--days", "0"]);
    fails_with(2, &["pki", "nonsense"]);
}

#[test]
fn every_subcommand_explains_every_flag() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["--help"], &["pki"]),
        (
            &["pki", "--help"],
            &["init-root", "issue-coordinator", "issue-admin"],
        ),
        (
            &["pki", "init-root", "--help"],
            &["--out", "--name", "--days", "--force"],
        ),
        (
            &["pki", "issue-coordinator", "--help"],
            &["--root", "--name", "--out", "--days", "--force", "pki_dir"],
        ),
        (
            &["pki", "issue-admin", "--help"],
            &["--root", "--name", "--out", "--days", "--force"],
        ),
    ];
    for (args, words) in cases {
        let help = ok(args);
        for word in *words {
            assert!(help.contains(word), "{args:?} lacks {word}:\n{help}");
        }
    }
}

#[test]
fn certificates_start_a_little_in_the_past() {
    // A peer whose clock is a minute behind accepts a fresh certificate.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let admin = tmp.path().join("admin");
    ok(&["pki", "init-root", "--out", s(&root)]);
    ok(&[
        "pki",
        "issue-admin",
        "--root",
        s(&root),
        "--name",
        "ops",
        "--out",
        s(&admin),
    ]);
    let earlier =
        UnixTime::since_unix_epoch(Duration::from_secs(now_unix_s().unsigned_abs() - 120));
    WebPkiClientVerifier::builder_with_provider(roots(&root.join("root.crt")), provider())
        .build()
        .unwrap()
        .verify_client_cert(&der(&admin.join("admin.crt")), &[], earlier)
        .unwrap();
}
