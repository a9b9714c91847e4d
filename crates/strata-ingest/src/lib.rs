//! The one ingest pipeline behind STOW-RS, C-STORE and bulk import.
//!
//! receive (spool to disk, hashing as bytes arrive) → parse and validate (`strata-dicom`, on a
//! blocking thread) → write the object durably (`strata-storage`) → commit the catalog rows and
//! the event in one transaction (`strata-catalog`) → acknowledge. A crash at any step leaves
//! the catalog consistent: a row is only ever written after its object is durable. An object
//! written without its row (crash between the two steps) is unreferenced and harmless; its key
//! is content-addressed, so a retry overwrites it with the same bytes.

mod outcome;
mod pipeline;
pub mod purge;
mod spool;

pub use outcome::{FailureReason, IngestError, IngestOutcome, StoredInstance, WarningReason};
pub use pipeline::{IngestPipeline, IngestSettings};
pub use purge::{Purge, PurgeError, purge_object};
pub use spool::{SpoolWriter, SpooledObject};
pub use strata_catalog::IngestSource;
