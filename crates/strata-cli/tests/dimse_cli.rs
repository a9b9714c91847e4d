//! `strata serve --dimse-addr`, `strata echo` and `strata store` as a user runs them.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::StrataProcess;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

fn strata(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .expect("strata runs")
}

#[tokio::test]
async fn test_strata_echo_and_store_talk_to_strata_serve() {
    let data_dir = tempfile::tempdir().unwrap();
    let dimse_addr = format!("127.0.0.1:{}", free_port());
    let server = StrataProcess::start(
        data_dir.path(),
        &[("STRATA__DIMSE__ADDR".to_owned(), dimse_addr.clone())],
    );

    let echo = strata(&["echo", "--dimse-addr", &dimse_addr]);
    assert!(
        echo.status.success(),
        "{}",
        String::from_utf8_lossy(&echo.stderr)
    );

    let corpus_valid = std::env::var_os("STRATA_CORPUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus"))
        .join("valid");
    let file = corpus_valid.join("ct_explicit_le_private_tags.dcm");
    let store = strata(&["store", "--dimse-addr", &dimse_addr, file.to_str().unwrap()]);
    assert!(
        store.status.success(),
        "{}",
        String::from_utf8_lossy(&store.stderr)
    );
    assert!(String::from_utf8_lossy(&store.stdout).contains("stored 1 of 1"));

    let found: Vec<serde_json::Value> = reqwest::get(format!(
        "{}/instances?SOPInstanceUID=1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322",
        server.base_url
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(found.len(), 1);

    let unknown_peer = strata(&[
        "echo",
        "--dimse-addr",
        &dimse_addr,
        "--ae-title",
        "NOTSTRATA",
    ]);
    assert!(!unknown_peer.status.success());
    server.kill();
}
