//! Node configuration: what a Strata process runs and where its state lives.
//!
//! Precedence, lowest to highest: built-in defaults, the config file (TOML), `STRATA__*`
//! environment variables (`STRATA__CATALOG__URI` sets `catalog.uri`), then command-line
//! flags, which the binary applies as overrides. Everything is validated at load time, before
//! any port opens. Depends only on `strata-types`.

mod node;
mod roles;
mod search;
mod tiering;

pub use node::{
    AuditConfig, AuthConfig, CatalogConfig, ConfigError, DicomwebConfig, DimseConfig, HttpConfig,
    IngestConfig, NodeConfig, S3Config, StorageConfig,
};
pub use roles::{Role, UnknownRole, parse_roles};
pub use search::SearchConfig;
pub use tiering::{HOT_TIER, TierConfig, TierRule, TieringConfig};
