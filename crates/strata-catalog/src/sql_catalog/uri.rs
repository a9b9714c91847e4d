//! Catalog URIs: which engine, and for SQLite where the file lives.

use std::path::{Path, PathBuf};

use crate::{CatalogError, CatalogErrorKind, CatalogResult};

/// The database a catalog URI points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CatalogUri {
    /// `sqlite://PATH` or `sqlite:PATH`: a database file, created if missing.
    Sqlite { path: PathBuf },
    /// `postgres://...` or `postgresql://...`, passed to the driver unchanged.
    Postgres { uri: String },
}

const EXPECTED_SCHEMES: &str = "expected `sqlite://`, `postgres://` or `postgresql://`";

/// Parses a catalog URI. Errors name the scheme at most, never the rest of the URI (it may hold
/// a password).
pub(crate) fn parse_catalog_uri(uri: &str) -> CatalogResult<CatalogUri> {
    let Some(scheme) = scheme_of(uri) else {
        return Err(config_error(format!(
            "catalog uri has no scheme: {EXPECTED_SCHEMES}"
        )));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "sqlite" => {
            let rest = &uri[scheme.len() + 1..];
            let location = rest.strip_prefix("//").unwrap_or(rest);
            if location.contains('?') {
                return Err(config_error(
                    "sqlite catalog uri parameters are not supported: the catalog sets its own",
                ));
            }
            if location.is_empty() {
                return Err(config_error("sqlite catalog uri has no path"));
            }
            if location == ":memory:" {
                return Err(config_error(
                    "in-memory sqlite catalogs are not supported: give a file path",
                ));
            }
            Ok(CatalogUri::Sqlite {
                path: PathBuf::from(location),
            })
        }
        "postgres" | "postgresql" => Ok(CatalogUri::Postgres {
            uri: uri.to_owned(),
        }),
        _ => Err(config_error(format!(
            "unsupported catalog uri scheme `{scheme}`: {EXPECTED_SCHEMES}"
        ))),
    }
}

/// Returns the scheme of `uri` when it has a syntactically valid one (RFC 3986 §3.1).
fn scheme_of(uri: &str) -> Option<&str> {
    let (scheme, _) = uri.split_once(':')?;
    let mut chars = scheme.chars();
    let first_is_letter = chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic());
    let rest_is_valid =
        chars.all(|other| other.is_ascii_alphanumeric() || matches!(other, '+' | '-' | '.'));
    (first_is_letter && rest_is_valid).then_some(scheme)
}

/// Creates the parent directory of a SQLite database file and returns the sqlx connection URL
/// for it, with an absolute, canonical directory (so the URL parser has no `..` to fold) and
/// `mode=rwc` so the file is created when missing.
pub(crate) async fn prepare_sqlite_url(path: &Path) -> CatalogResult<String> {
    let io_error = |action: &str, error: std::io::Error| CatalogError {
        kind: CatalogErrorKind::Config,
        message: format!(
            "failed to {action} for the sqlite catalog at `{}`",
            path.display()
        ),
        source: Some(Box::new(error)),
    };
    let file_name = path.file_name().ok_or_else(|| {
        config_error(format!(
            "sqlite catalog path `{}` names no file",
            path.display()
        ))
    })?;
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    tokio::fs::create_dir_all(&parent)
        .await
        .map_err(|error| io_error("create the directory", error))?;
    let canonical_parent = tokio::fs::canonicalize(&parent)
        .await
        .map_err(|error| io_error("resolve the directory", error))?;
    let absolute_path = canonical_parent.join(file_name);
    let path_text = absolute_path.to_str().ok_or_else(|| {
        config_error(format!(
            "sqlite catalog path `{}` is not valid utf-8",
            path.display()
        ))
    })?;
    Ok(format!(
        "sqlite://{}?mode=rwc",
        encode_sqlite_path(path_text)
    ))
}

/// Percent-encodes the characters that would end or alter the path part of a URL. sqlx decodes
/// them again before opening the file.
fn encode_sqlite_path(path: &str) -> String {
    let mut encoded = String::with_capacity(path.len());
    for character in path.chars() {
        match character {
            '%' => encoded.push_str("%25"),
            '?' => encoded.push_str("%3F"),
            '#' => encoded.push_str("%23"),
            ' ' => encoded.push_str("%20"),
            '\\' => encoded.push_str("%5C"),
            other => encoded.push(other),
        }
    }
    encoded
}

fn config_error(message: impl Into<String>) -> CatalogError {
    CatalogError::new(CatalogErrorKind::Config, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_sqlite_uris_parse_to_paths() {
        assert_eq!(
            parse_catalog_uri("sqlite://./strata-data/catalog.db").unwrap(),
            CatalogUri::Sqlite {
                path: PathBuf::from("./strata-data/catalog.db")
            }
        );
        assert_eq!(
            parse_catalog_uri("sqlite:///var/lib/strata/catalog.db").unwrap(),
            CatalogUri::Sqlite {
                path: PathBuf::from("/var/lib/strata/catalog.db")
            }
        );
        assert_eq!(
            parse_catalog_uri("sqlite:catalog.db").unwrap(),
            CatalogUri::Sqlite {
                path: PathBuf::from("catalog.db")
            }
        );
    }

    #[test]
    fn test_postgres_uris_are_kept_whole() {
        for uri in [
            "postgres://strata:pw@db/strata",
            "postgresql://db/strata",
            "POSTGRES://db/x",
        ] {
            assert_eq!(
                parse_catalog_uri(uri).unwrap(),
                CatalogUri::Postgres {
                    uri: uri.to_owned()
                }
            );
        }
    }

    #[test]
    fn test_unknown_scheme_is_named_without_the_password() {
        let error = parse_catalog_uri("mysql://strata:hunter2@db/strata").unwrap_err();
        assert_eq!(error.kind, CatalogErrorKind::Config);
        assert!(error.message.contains("`mysql`"), "{}", error.message);
        assert!(!error.message.contains("hunter2"));
        assert_eq!(error.message, error.message.to_lowercase());
    }

    #[test]
    fn test_uri_without_scheme_is_refused() {
        for uri in ["/var/lib/catalog.db", "", "1abc://x"] {
            let error = parse_catalog_uri(uri).unwrap_err();
            assert_eq!(error.kind, CatalogErrorKind::Config);
            assert!(error.message.contains("no scheme"), "{}", error.message);
        }
    }

    #[test]
    fn test_sqlite_uri_edge_cases_are_refused() {
        for uri in ["sqlite://", "sqlite::memory:", "sqlite://x.db?mode=ro"] {
            assert_eq!(
                parse_catalog_uri(uri).unwrap_err().kind,
                CatalogErrorKind::Config,
                "{uri}"
            );
        }
    }

    #[test]
    fn test_sqlite_path_encoding_protects_url_delimiters() {
        assert_eq!(
            encode_sqlite_path("/data/a b/c?#%.db"),
            "/data/a%20b/c%3F%23%25.db"
        );
    }
}
