//! DIMSE networking (PS3.7, PS3.8) on `dicom-ul`: the DIMSE message layer (command sets,
//! P-DATA fragmentation and reassembly), the association loop of the SCP with C-ECHO,
//! C-STORE, C-FIND, C-MOVE and C-GET, and the SCU used by C-MOVE and the `strata` CLI.
//!
//! C-STORE goes through `strata-ingest` (the same pipeline as STOW-RS) and C-FIND through
//! `Catalog::query` (the same query as QIDO-RS). Must not depend on HTTP crates or on
//! `strata-serve`.

mod error;
mod find;
mod listener;
mod message;
mod retrieve;
mod scp;
mod scu;
mod storage_sop_classes;
mod transfer_syntaxes;
mod transport;

pub use error::{DimseError, DimseErrorKind};
pub use listener::{DimseServices, DimseSettings, serve_dimse};
pub use message::{Command, command_field, status};
pub use scu::{Part10Parts, StoreScu, StoreScuOutcome, echo, read_part10};
pub use storage_sop_classes::STORAGE_SOP_CLASSES;
pub use transfer_syntaxes::{STORAGE_TRANSFER_SYNTAXES, UNCOMPRESSED_TRANSFER_SYNTAXES};
