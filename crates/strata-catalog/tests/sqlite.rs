//! Runs the conformance suite on SQLite files in temporary directories, plus SQLite-specific
//! checks: file creation, reopening, migrations, and writers sharing one file.

use std::sync::Arc;

use sqlx::Connection;
use strata_catalog::conformance::{TestCatalog, synthetic_record};
use strata_catalog::{
    Catalog, CatalogErrorKind, CatalogQuery, QueryLevel, SqlCatalog, StoreOutcome, open_catalog,
};

/// Returns a fresh catalog in a new temporary directory (with a parent directory to create).
async fn sqlite_catalog() -> Option<TestCatalog> {
    let directory = tempfile::tempdir().expect("temporary directory");
    let uri = format!("sqlite://{}/nested/catalog.db", directory.path().display());
    let catalog = SqlCatalog::connect(&uri, 4)
        .await
        .expect("sqlite catalog opens");
    Some(TestCatalog::new(Arc::new(catalog)).with_teardown(move || async move { drop(directory) }))
}

mod conformance {
    use super::sqlite_catalog;

    strata_catalog::catalog_conformance_tests!(sqlite_catalog);
}

fn all_studies() -> CatalogQuery {
    CatalogQuery {
        level: QueryLevel::Study,
        study_scope: None,
        series_scope: None,
        filters: vec![],
        limit: None,
        offset: 0,
        with_metadata: false,
    }
}

#[tokio::test]
async fn test_reopening_keeps_data_and_migrations_are_idempotent() {
    let directory = tempfile::tempdir().unwrap();
    let uri = format!("sqlite://{}/a/b/catalog.db", directory.path().display());
    let record = synthetic_record(1, 1, 1);
    {
        let catalog = SqlCatalog::connect(&uri, 2).await.unwrap();
        assert_eq!(
            catalog.store_instance(&record).await.unwrap(),
            StoreOutcome::Created
        );
        catalog.migrate().await.unwrap();
        catalog.migrate().await.unwrap();
        catalog.close().await;
    }
    assert!(
        std::fs::metadata(directory.path().join("a/b/catalog.db"))
            .unwrap()
            .is_file()
    );

    let reopened = SqlCatalog::connect(&uri, 2).await.unwrap();
    assert_eq!(reopened.count_instances().await.unwrap(), 1);
    assert_eq!(
        reopened.store_instance(&record).await.unwrap(),
        StoreOutcome::AlreadyStored
    );
    assert_eq!(reopened.events_after(0, 10).await.unwrap().len(), 1);
    assert_eq!(reopened.query(&all_studies()).await.unwrap().len(), 1);

    let without_migrations = SqlCatalog::connect_without_migrations(&uri, 1)
        .await
        .unwrap();
    assert_eq!(without_migrations.count_instances().await.unwrap(), 1);
}

#[tokio::test]
async fn test_connect_without_migrations_leaves_the_schema_to_migrate() {
    let directory = tempfile::tempdir().unwrap();
    let uri = format!("sqlite://{}/catalog.db", directory.path().display());
    let catalog = SqlCatalog::connect_without_migrations(&uri, 1)
        .await
        .unwrap();
    catalog.ping().await.unwrap();
    let error = catalog.count_instances().await.unwrap_err();
    assert_eq!(error.kind, CatalogErrorKind::Unavailable, "{error}");
    catalog.migrate().await.unwrap();
    assert_eq!(catalog.count_instances().await.unwrap(), 0);
}

#[tokio::test]
async fn test_migrations_refuse_a_database_from_a_newer_binary() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("catalog.db");
    let uri = format!("sqlite://{}", path.display());
    SqlCatalog::connect(&uri, 1).await.unwrap().close().await;

    let mut connection = sqlx::SqliteConnection::connect(&uri).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (999, 'from the future', TRUE, X'00', 0)",
    )
    .execute(&mut connection)
    .await
    .unwrap();
    connection.close().await.unwrap();

    let error = SqlCatalog::connect(&uri, 1).await.unwrap_err();
    assert_eq!(error.kind, CatalogErrorKind::Migration);
    assert!(error.message.contains("999"), "{}", error.message);
}

#[tokio::test]
async fn test_wal_journal_is_used() {
    let directory = tempfile::tempdir().unwrap();
    let uri = format!("sqlite://{}/catalog.db", directory.path().display());
    let catalog = SqlCatalog::connect(&uri, 1).await.unwrap();
    catalog
        .store_instance(&synthetic_record(1, 1, 1))
        .await
        .unwrap();
    let wal = std::fs::metadata(directory.path().join("catalog.db-wal")).unwrap();
    assert!(wal.is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_two_catalogs_on_one_file_write_without_lock_errors() {
    let directory = tempfile::tempdir().unwrap();
    let uri = format!("sqlite://{}/catalog.db", directory.path().display());
    let first: Arc<dyn Catalog> = Arc::new(SqlCatalog::connect(&uri, 4).await.unwrap());
    let second: Arc<dyn Catalog> = Arc::new(SqlCatalog::connect(&uri, 4).await.unwrap());
    let tasks: Vec<_> = (1..=16)
        .map(|instance| {
            let catalog = Arc::clone(if instance % 2 == 0 { &first } else { &second });
            tokio::spawn(async move {
                catalog
                    .store_instance(&synthetic_record(1, 1, instance))
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), StoreOutcome::Created);
    }
    assert_eq!(first.count_instances().await.unwrap(), 16);
    let studies = second.query(&all_studies()).await.unwrap();
    assert_eq!(
        (studies[0].num_study_series, studies[0].num_study_instances),
        (1, 16)
    );
}

#[tokio::test]
async fn test_unknown_scheme_is_a_config_error_without_secrets() {
    let Err(error) = open_catalog("mysql://strata:hunter2@db.invalid/strata", 1).await else {
        panic!("a mysql uri must not open a catalog");
    };
    assert_eq!(error.kind, CatalogErrorKind::Config);
    assert!(error.message.contains("mysql"), "{}", error.message);
    assert!(!error.to_string().contains("hunter2"));
}

#[tokio::test]
async fn test_open_catalog_returns_a_working_trait_object() {
    let directory = tempfile::tempdir().unwrap();
    let catalog = open_catalog(
        &format!("sqlite://{}/catalog.db", directory.path().display()),
        2,
    )
    .await
    .unwrap();
    catalog.ping().await.unwrap();
    assert_eq!(catalog.count_instances().await.unwrap(), 0);
}
