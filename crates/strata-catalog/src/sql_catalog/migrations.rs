//! The schema migrations, embedded in the binary, one list per engine.
//!
//! They run through sqlx's `Migrator`, which records applied versions and their checksums in
//! `_sqlx_migrations`: running them again is a no-op, and an edited migration that was already
//! applied is refused instead of silently diverging. Never edit a released migration; add a new
//! file and a new entry below.

use std::borrow::Cow;

use futures::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use super::Engine;

/// One embedded migration: version, description and SQL text.
type EmbeddedMigration = (i64, &'static str, &'static str);

const SQLITE_MIGRATIONS: &[EmbeddedMigration] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "instance_title_and_child_indexes",
        include_str!("../../migrations/sqlite/0002_instance_title_and_child_indexes.sql"),
    ),
    (
        3,
        "instance_object_key_index",
        include_str!("../../migrations/sqlite/0003_instance_object_key_index.sql"),
    ),
    (
        4,
        "pixel_data_layout_and_series_metadata",
        include_str!("../../migrations/sqlite/0004_pixel_data_layout_and_series_metadata.sql"),
    ),
    (
        5,
        "fuzzy_person_names",
        include_str!("../../migrations/sqlite/0005_fuzzy_person_names.sql"),
    ),
    (
        6,
        "tiering",
        include_str!("../../migrations/sqlite/0006_tiering.sql"),
    ),
    (
        7,
        "object_purge",
        include_str!("../../migrations/sqlite/0007_object_purge.sql"),
    ),
];

const POSTGRES_MIGRATIONS: &[EmbeddedMigration] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "instance_title_and_child_indexes",
        include_str!("../../migrations/postgres/0002_instance_title_and_child_indexes.sql"),
    ),
    (
        3,
        "instance_object_key_index",
        include_str!("../../migrations/postgres/0003_instance_object_key_index.sql"),
    ),
    (
        4,
        "pixel_data_layout_and_series_metadata",
        include_str!("../../migrations/postgres/0004_pixel_data_layout_and_series_metadata.sql"),
    ),
    (
        5,
        "fuzzy_person_names",
        include_str!("../../migrations/postgres/0005_fuzzy_person_names.sql"),
    ),
    (
        6,
        "tiering",
        include_str!("../../migrations/postgres/0006_tiering.sql"),
    ),
    (
        7,
        "object_purge",
        include_str!("../../migrations/postgres/0007_object_purge.sql"),
    ),
];

/// A `MigrationSource` over the migrations compiled into the binary.
#[derive(Debug)]
struct EmbeddedMigrations(&'static [EmbeddedMigration]);

impl MigrationSource<'static> for EmbeddedMigrations {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        let migrations = self
            .0
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    Cow::Borrowed(sql),
                    false,
                )
            })
            .collect();
        Box::pin(async move { Ok(migrations) })
    }
}

/// Returns the migrator for `engine`.
pub(crate) async fn migrator(engine: Engine) -> Result<Migrator, sqlx::migrate::MigrateError> {
    let migrations = match engine {
        Engine::Sqlite => SQLITE_MIGRATIONS,
        Engine::Postgres => POSTGRES_MIGRATIONS,
    };
    Migrator::new(EmbeddedMigrations(migrations)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_engines_have_the_same_migration_versions() {
        let versions = |migrations: &[EmbeddedMigration]| {
            migrations
                .iter()
                .map(|&(version, description, _)| (version, description))
                .collect::<Vec<_>>()
        };
        assert_eq!(versions(SQLITE_MIGRATIONS), versions(POSTGRES_MIGRATIONS));
    }

    #[test]
    fn test_engines_create_the_same_tables_and_indexes() {
        let names = |sql: &str| {
            let mut names: Vec<String> = sql
                .lines()
                .filter_map(|line| {
                    let line = line.trim();
                    let rest = line
                        .strip_prefix("CREATE TABLE IF NOT EXISTS ")
                        .or_else(|| line.strip_prefix("CREATE INDEX IF NOT EXISTS "))
                        .or_else(|| line.strip_prefix("CREATE UNIQUE INDEX IF NOT EXISTS "))?;
                    rest.split_whitespace().next().map(str::to_owned)
                })
                .collect();
            names.sort();
            names
        };
        let sqlite_names = names(SQLITE_MIGRATIONS[0].2);
        assert!(sqlite_names.len() > 10);
        assert_eq!(sqlite_names, names(POSTGRES_MIGRATIONS[0].2));
    }
}
