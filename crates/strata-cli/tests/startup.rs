//! Bad configuration stops `strata serve` at start-up with a message that says what to fix.

use std::process::Command;

fn serve_with(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let data_dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    command
        .args(["serve", "--data-dir"])
        .arg(data_dir.path())
        .args(args);
    if !args.contains(&"--http-addr") {
        command.args(["--http-addr", "127.0.0.1:0"]);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("strata runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn test_unknown_config_key_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strata.toml");
    std::fs::write(&file, "[catalog]\nurl = \"sqlite:///tmp/x.db\"\n").unwrap();
    let (success, stderr) = serve_with(&["--config", file.to_str().unwrap()], &[]);
    assert!(!success);
    assert!(
        stderr.contains("unknown field") && stderr.contains("url"),
        "{stderr}"
    );
}

#[test]
fn test_bad_environment_value_names_the_key() {
    let (success, stderr) = serve_with(&[], &[("STRATA__STORAGE__URI", "ftp://nowhere")]);
    assert!(!success);
    assert!(stderr.contains("storage.uri"), "{stderr}");
}

#[test]
fn test_bad_listen_address_is_refused() {
    let (success, stderr) = serve_with(&["--http-addr", "not-an-address"], &[]);
    assert!(!success);
    assert!(stderr.contains("http.addr"), "{stderr}");
}

#[test]
fn test_unreachable_catalog_and_store_fail_at_start_up() {
    let (success, stderr) = serve_with(
        &[],
        &[(
            "STRATA__CATALOG__URI",
            "postgres://strata:secret@127.0.0.1:1/strata",
        )],
    );
    assert!(!success);
    assert!(stderr.contains("failed to open the catalog"), "{stderr}");
    assert!(
        !stderr.contains("secret"),
        "the password is not printed: {stderr}"
    );

    let (success, stderr) = serve_with(
        &[],
        &[
            ("STRATA__STORAGE__URI", "s3://bucket/prefix"),
            ("STRATA__STORAGE__S3__ENDPOINT", "http://127.0.0.1:1"),
            ("STRATA__STORAGE__S3__ALLOW_HTTP", "true"),
            ("STRATA__STORAGE__S3__ACCESS_KEY_ID", "key"),
            ("STRATA__STORAGE__S3__SECRET_ACCESS_KEY", "secret-key"),
        ],
    );
    assert!(!success);
    assert!(stderr.contains("object store"), "{stderr}");
    assert!(
        !stderr.contains("secret-key"),
        "the secret is not printed: {stderr}"
    );
}
