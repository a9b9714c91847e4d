//! The tiering scenarios (`conformance::tiering`) on SQLite, and on PostgreSQL when
//! `STRATA_TEST_POSTGRES_URI` is set (a scratch database per test, dropped afterwards).

use sqlx::{Connection, Executor, PgConnection};
use strata_catalog::SqlCatalog;
use strata_catalog::conformance::{move_journal, study_facts_and_bookkeeping};

async fn sqlite_catalog() -> (tempfile::TempDir, SqlCatalog) {
    let directory = tempfile::tempdir().unwrap();
    let uri = format!("sqlite://{}", directory.path().join("catalog.db").display());
    let catalog = SqlCatalog::connect(&uri, 4).await.unwrap();
    (directory, catalog)
}

/// Runs `scenario` on a scratch PostgreSQL database, when one is configured.
async fn with_postgres<F, Fut>(scenario: F)
where
    F: FnOnce(SqlCatalog) -> Fut,
    Fut: std::future::Future<Output = SqlCatalog>,
{
    let Ok(admin_uri) = std::env::var("STRATA_TEST_POSTGRES_URI") else {
        eprintln!("skipped: STRATA_TEST_POSTGRES_URI is not set");
        return;
    };
    let name = format!("strata_t_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&admin_uri).await.unwrap();
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let mut uri = url::Url::parse(&admin_uri).unwrap();
    uri.set_path(&format!("/{name}"));
    let catalog = SqlCatalog::connect(uri.as_str(), 4).await.unwrap();
    let catalog = scenario(catalog).await;
    catalog.close().await;
    let _ = admin
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_tiering_move_journal_sqlite() {
    let (_directory, catalog) = sqlite_catalog().await;
    move_journal(&catalog).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_tiering_study_facts_sqlite() {
    let (_directory, catalog) = sqlite_catalog().await;
    study_facts_and_bookkeeping(&catalog).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_tiering_move_journal_postgres() {
    with_postgres(|catalog| async move {
        move_journal(&catalog).await;
        catalog
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_tiering_study_facts_postgres() {
    with_postgres(|catalog| async move {
        study_facts_and_bookkeeping(&catalog).await;
        catalog
    })
    .await;
}
