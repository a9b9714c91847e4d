//! Test harness for Strata's end-to-end tests: an archive started in-process on a chosen
//! backend, a DICOMweb client, the shared corpus and a synthetic DICOM generator.
//!
//! Backends: SQLite + local directory and SQLite + an in-process S3 server always; PostgreSQL +
//! an external S3 store (Garage in CI) when `STRATA_TEST_POSTGRES_URI` and `STRATA_TEST_S3_*`
//! are set.

pub mod archive;
pub mod corpus;
pub mod multipart;
pub mod synthetic;

pub use archive::{Backend, TestArchive};
