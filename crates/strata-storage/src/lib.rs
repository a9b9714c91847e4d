//! Object storage for DICOM instances behind one trait, `BlobStore`, on `object_store`:
//! local directory, in-memory and S3-compatible backends.
//!
//! Owns how bytes reach durable storage; knows nothing of DICOM or the catalog. An object is
//! never partially visible: it is written whole (local: temp file + rename, or a spooled file
//! hard-linked into place; S3: single PUT or a completed multipart upload) before `put_file`
//! returns. Correctness never relies on conditional PUT: uniqueness is the catalog's job.
//!
//! Depends on `strata-types` and `strata-config` only, never on the catalog or ingest.
//! Feature `testsuite` adds [`conformance`] (the suite every backend passes) and
//! [`testsuite`] (an in-process S3 server).

mod blob_store;
mod error;
mod resolver;
mod s3;
mod store;
mod upload;

#[cfg(any(test, feature = "testsuite"))]
pub mod conformance;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;

pub use blob_store::{BlobStore, ByteStream, ObjectMeta};
pub use error::{StorageError, StorageErrorKind, StorageResult};
pub use resolver::open_blob_store;
pub use s3::DEFAULT_S3_REGION;
pub use store::ObjectStoreBlobStore;
pub use upload::{SHA256_METADATA_NAME, SINGLE_PUT_MAX_BYTES};
