//! Runs the conformance suite on PostgreSQL when `STRATA_TEST_POSTGRES_URI` is set, e.g.
//! `postgres://strata:strata@127.0.0.1:5432/strata_test`. The role needs CREATEDB: every test
//! gets its own scratch database `strata_t_<uuid>`, dropped afterwards, so tests run in
//! parallel. Without the variable the tests print that they were skipped and pass.

use std::sync::Arc;

use sqlx::{Connection, Executor, PgConnection};
use strata_catalog::conformance::{TestCatalog, synthetic_record};
use strata_catalog::{Catalog, CatalogErrorKind, SqlCatalog, StoreOutcome};

const URI_VARIABLE: &str = "STRATA_TEST_POSTGRES_URI";

/// A scratch database on the configured server.
struct ScratchDatabase {
    admin_uri: String,
    name: String,
    uri: String,
}

impl ScratchDatabase {
    /// Creates a scratch database, or returns `None` when no server is configured.
    async fn create() -> Option<ScratchDatabase> {
        let Ok(admin_uri) = std::env::var(URI_VARIABLE) else {
            eprintln!("skipped: {URI_VARIABLE} is not set, postgres catalog tests did not run");
            return None;
        };
        let name = format!("strata_t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_uri)
            .await
            .expect("admin connection");
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create database");
        admin.close().await.expect("close admin connection");
        let mut uri = url::Url::parse(&admin_uri).expect("valid postgres uri");
        uri.set_path(&format!("/{name}"));
        Some(ScratchDatabase {
            admin_uri,
            name,
            uri: uri.to_string(),
        })
    }

    /// Drops the scratch database. `WITH (FORCE)` ends leftover sessions of our role, but a
    /// non-superuser cannot end an autovacuum worker busy on the fresh tables, so a refused
    /// drop is retried for a while; a database that still cannot be dropped is reported, not
    /// turned into a test failure.
    async fn drop_database(self) {
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let mut last_error = None;
        for _ in 0..40 {
            let mut admin = PgConnection::connect(&self.admin_uri)
                .await
                .expect("admin connection");
            let outcome = admin.execute(statement.as_str()).await;
            admin.close().await.expect("close admin connection");
            match outcome {
                Ok(_) => return,
                Err(error) => last_error = Some(error),
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        eprintln!(
            "warning: scratch database {} was not dropped: {last_error:?}",
            self.name
        );
    }
}

async fn postgres_catalog() -> Option<TestCatalog> {
    let database = ScratchDatabase::create().await?;
    let catalog = Arc::new(
        SqlCatalog::connect(&database.uri, 4)
            .await
            .expect("postgres catalog opens"),
    );
    let closing = Arc::clone(&catalog);
    Some(TestCatalog::new(catalog).with_teardown(move || async move {
        closing.close().await;
        database.drop_database().await;
    }))
}

mod conformance {
    use super::postgres_catalog;

    strata_catalog::catalog_conformance_tests!(postgres_catalog);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_concurrent_migrations_and_reopening_are_safe() {
    let Some(database) = ScratchDatabase::create().await else {
        return;
    };
    let (first, second) = tokio::join!(
        SqlCatalog::connect(&database.uri, 2),
        SqlCatalog::connect(&database.uri, 2)
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    let record = synthetic_record(1, 1, 1);
    assert_eq!(
        first.store_instance(&record).await.unwrap(),
        StoreOutcome::Created
    );
    second.migrate().await.unwrap();
    first.close().await;
    second.close().await;

    let reopened = SqlCatalog::connect(&database.uri, 2).await.unwrap();
    assert_eq!(reopened.count_instances().await.unwrap(), 1);
    assert_eq!(
        reopened.store_instance(&record).await.unwrap(),
        StoreOutcome::AlreadyStored
    );
    reopened.close().await;
    database.drop_database().await;
}

#[tokio::test]
async fn test_unreachable_server_is_unavailable_without_the_password() {
    let error = SqlCatalog::connect("postgres://strata:hunter2@127.0.0.1:1/strata", 1)
        .await
        .unwrap_err();
    assert_eq!(error.kind, CatalogErrorKind::Unavailable, "{error}");
    assert!(
        !format!("{error} {error:?}").contains("hunter2"),
        "{error:?}"
    );
}
