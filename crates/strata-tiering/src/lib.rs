//! Tiered storage with integrity (issue 4, docs/tiering.md): tiers declared in `[tiering]`,
//! placement rules, the journaled mover, restores of archived objects and fixity.
//!
//! Owns [`TieredStore`], the `BlobStore` every reader goes through, which reads each object from
//! the tier the catalog names; the [`Mover`] (copy → verify → commit → delete source, crash-safe
//! through the catalog's move journal); the [`TieringService`] (policy scan, event follower,
//! scheduled fixity) and its admin [`router`]. Depends on storage, catalog and config; never on
//! the protocol adapters.

mod admin;
mod archive;
mod error;
mod fixity;
mod mover;
mod node;
mod policy;
mod service;
mod tiered_store;
mod tiers;

pub use admin::router;
pub use archive::{ARCHIVE_PUT_MAX_BYTES, ArchiveClient, ArchiveHead, RestoreStatus};
pub use error::{TieringError, TieringResult};
pub use fixity::{FixityFailure, FixityReport, check_object};
pub use mover::{MoveOutcome, MoveStep, Mover, RateLimiter};
pub use node::TieringNode;
pub use policy::{Placement, rule_matches, target_tier};
pub use service::{
    ApplyReport, PendingMove, PlannedMove, RestoreReport, StatusReport, TierStatus, TieringService,
    check_deletion_allowed,
};
pub use tiered_store::{RestoreSettings, TieredStore};
pub use tiers::{Tier, TierSet};
