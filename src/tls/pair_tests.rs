use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// Makes a self-signed P-256 pair `<name>.crt` / `<name>.key` in `dir` with the openssl CLI.
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl command line tool is needed for these tests");
    assert!(status.status.success(), "openssl failed: {status:?}");
    (cert, key)
}

fn tls(cert: &Path, key: &Path) -> TlsConfig {
    TlsConfig {
        listen: "127.0.0.1:8443".parse().unwrap(),
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
    }
}

#[test]
fn a_matching_pair_loads_with_its_subject_and_no_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "a");
    let pair = load(&tls(&cert, &key)).unwrap();
    assert!(pair.summary.contains("CN=localhost"), "{}", pair.summary);
    assert!(pair.warnings.is_empty(), "{:?}", pair.warnings);
    assert!(!pair.end_entity().is_empty());
}

#[test]
fn a_key_of_another_certificate_is_refused_naming_tls_key() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = self_signed(dir.path(), "a");
    let (_, other_key) = self_signed(dir.path(), "b");
    let err = load(&tls(&cert, &other_key)).unwrap_err();
    assert_eq!(err.key, "tls.key");
    assert!(
        err.reason.contains("does not match the certificate"),
        "{err}"
    );
}

#[test]
fn missing_files_name_their_key_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "a");
    let nowhere = dir.path().join("nowhere.pem");
    let err = load(&tls(&nowhere, &key)).unwrap_err();
    assert_eq!(err.key, "tls.cert");
    assert!(err.to_string().contains("cannot read") && err.to_string().contains("nowhere.pem"));
    let err = load(&tls(&cert, &nowhere)).unwrap_err();
    assert_eq!(err.key, "tls.key");
}

#[test]
fn swapped_or_empty_files_say_what_they_hold() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "a");
    let err = load(&tls(&key, &cert)).unwrap_err();
    assert_eq!(err.key, "tls.cert");
    assert!(err.reason.contains("belongs in tls.key"), "{err}");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let err = load(&tls(&cert, &empty)).unwrap_err();
    assert_eq!(err.key, "tls.key");
    assert!(err.reason.contains("holds no PEM private key"), "{err}");
}

#[test]
fn an_expired_certificate_is_a_warning_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = self_signed(dir.path(), "a");
    let chain = read_chain(&cert).unwrap();
    let in_a_year = unix_now() + 365 * 24 * 3600;
    let (_, warnings) = describe(&cert, &chain[0], in_a_year).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("tls.cert: ") && warnings[0].contains("expired on"));
    let a_year_ago = unix_now() - 365 * 24 * 3600;
    let (_, warnings) = describe(&cert, &chain[0], a_year_ago).unwrap();
    assert!(warnings[0].contains("not valid before"), "{warnings:?}");
}
