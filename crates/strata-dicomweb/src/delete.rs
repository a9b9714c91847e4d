//! `DELETE /studies/{study}[/series/{series}[/instances/{instance}]]`.
//!
//! PS3.18 defines no delete transaction in the Studies Service; this follows common archive
//! practice (dcm4chee, Azure, Google): `204 No Content` on success, `404` with problem details
//! when nothing matches, and `405` when the archive's deletion policy
//! (`dicomweb.allow_delete`) forbids it.
//!
//! Order of work: the catalog removes the rows and appends `InstanceDeleted` events in one
//! transaction; only after the commit are the objects deleted from the store, and only those
//! no remaining row refers to (objects are content-addressed: an instance stored again after
//! its deletion refers to the same key). A crash between the two steps leaves unreferenced
//! objects, never a row without its object; [`find_unreferenced_objects`] lists them.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::StatusCode;
use strata_catalog::{Catalog, CatalogErrorKind, CatalogResult, DeleteOutcome, DeleteScope};
use strata_ingest::purge_object;
use strata_storage::BlobStore;
use strata_types::{ObjectKey, SeriesUid, SopInstanceUid, StudyUid};
use tracing::{info, warn};

use crate::{DicomwebState, Problem};

/// What the archive's retention rules say about deleting (part of) a study.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeletionCheck {
    Allowed,
    /// Refused (legal hold, retention period): answered 409 with this reason.
    Refused(String),
    /// The rules could not be read (catalog down): answered 503, the cause is logged.
    Unavailable(String),
}

/// Checked before every DELETE with the study it touches; wired by `strata-serve` to the
/// tiering service's retention and legal-hold rules. The check and the deletion are not one
/// transaction: a hold set while a DELETE is past its check does not stop that DELETE.
pub type DeletionGuard = std::sync::Arc<
    dyn Fn(StudyUid) -> futures::future::BoxFuture<'static, DeletionCheck> + Send + Sync,
>;

/// Objects deleted from the store at once after a deletion's commit.
const PURGE_CONCURRENCY: usize = 16;

/// `DELETE /studies/{study}`.
pub(crate) async fn delete_study(
    State(state): State<DicomwebState>,
    Path(study): Path<String>,
) -> Response {
    respond(&state, scope(&study, None, None), "GET, POST").await
}

/// `DELETE /studies/{study}/series/{series}`.
pub(crate) async fn delete_series(
    State(state): State<DicomwebState>,
    Path((study, series)): Path<(String, String)>,
) -> Response {
    respond(&state, scope(&study, Some(&series), None), "GET").await
}

/// `DELETE /studies/{study}/series/{series}/instances/{instance}`.
pub(crate) async fn delete_instance(
    State(state): State<DicomwebState>,
    Path((study, series, instance)): Path<(String, String, String)>,
) -> Response {
    respond(&state, scope(&study, Some(&series), Some(&instance)), "GET").await
}

fn scope(
    study: &str,
    series: Option<&str>,
    instance: Option<&str>,
) -> Result<DeleteScope, Problem> {
    let bad = |what: &str, value: &str, error: &dyn std::fmt::Display| {
        Problem::bad_request(format!("{what} UID `{value}` is invalid: {error}"))
    };
    let study_instance_uid = StudyUid::parse(study).map_err(|error| bad("study", study, &error))?;
    let Some(series) = series else {
        return Ok(DeleteScope::Study { study_instance_uid });
    };
    let series_instance_uid =
        SeriesUid::parse(series).map_err(|error| bad("series", series, &error))?;
    let Some(instance) = instance else {
        return Ok(DeleteScope::Series {
            study_instance_uid,
            series_instance_uid,
        });
    };
    let sop_instance_uid =
        SopInstanceUid::parse(instance).map_err(|error| bad("instance", instance, &error))?;
    Ok(DeleteScope::Instance {
        study_instance_uid,
        series_instance_uid,
        sop_instance_uid,
    })
}

/// Deletes `scope`; `allowed` lists the other methods of the resource for a 405.
async fn respond(
    state: &DicomwebState,
    scope: Result<DeleteScope, Problem>,
    allowed: &'static str,
) -> Response {
    if !state.settings.allow_delete {
        // 405 names the methods the resource does support (RFC 9110 §15.5.6).
        let mut response = Problem {
            status: StatusCode::METHOD_NOT_ALLOWED,
            detail: "deletion is disabled on this archive (dicomweb.allow_delete = false)"
                .to_owned(),
            retry_after_seconds: None,
        }
        .into_response();
        response
            .headers_mut()
            .insert(http::header::ALLOW, http::HeaderValue::from_static(allowed));
        return response;
    }
    let scope = match scope {
        Ok(scope) => scope,
        Err(problem) => return problem.into_response(),
    };
    if let Some(guard) = &state.deletion_guard {
        match guard(scope.study_instance_uid().clone()).await {
            DeletionCheck::Allowed => {}
            DeletionCheck::Refused(reason) => {
                return Problem {
                    status: StatusCode::CONFLICT,
                    detail: reason,
                    retry_after_seconds: None,
                }
                .into_response();
            }
            DeletionCheck::Unavailable(cause) => {
                return Problem::unavailable(&cause).into_response();
            }
        }
    }
    let deleted = delete_and_purge(state.catalog.as_ref(), state.store.as_ref(), &scope).await;
    // Also after a failure: part of the scope may be gone.
    state.frame_sources.forget_study(scope.study_instance_uid());
    match deleted {
        Ok(outcome) => {
            info!(
                study_instance_uid = %scope.study_instance_uid(),
                num_instances = outcome.instances.len(),
                num_series_removed = outcome.removed_series.len(),
                study_removed = outcome.study_removed,
                "dicomweb delete done"
            );
            StatusCode::NO_CONTENT.into_response()
        }
        Err(error) if error.kind == CatalogErrorKind::NotFound => {
            Problem::not_found(error.message).into_response()
        }
        Err(error) => Problem::unavailable(&error).into_response(),
    }
}

/// Deletes `scope` from the catalog (one transaction, with its `InstanceDeleted` events), then
/// purges from `store` the objects no remaining instance refers to (`strata_ingest::purge`: an
/// ingest storing the same content meanwhile keeps its object). A failed purge is logged and
/// leaves an unreferenced object behind; it does not fail the call, since the catalog change
/// is committed.
pub async fn delete_and_purge(
    catalog: &dyn Catalog,
    store: &dyn BlobStore,
    scope: &DeleteScope,
) -> CatalogResult<DeleteOutcome> {
    let outcome = catalog.delete(scope).await?;
    futures::stream::iter(&outcome.instances)
        .for_each_concurrent(PURGE_CONCURRENCY, |instance| async move {
            let key = &instance.object.key;
            if let Err(error) = purge_object(catalog, store, key).await {
                warn!(%error, object_key = %key, "failed to delete the object of a deleted instance");
            }
        })
        .await;
    Ok(outcome)
}

/// Lists the objects of `store` that no catalog row refers to: leftovers of a crash between a
/// deletion's commit and its object deletions, or between an ingest's object write and its
/// commit. Reports only: an object listed here may be one an ingest is about to commit, so
/// an operator (or a sweep that re-checks after a grace period) decides what to remove.
pub async fn find_unreferenced_objects(
    catalog: &dyn Catalog,
    store: &dyn BlobStore,
) -> Result<Vec<ObjectKey>, Box<dyn std::error::Error + Send + Sync>> {
    let mut unreferenced = Vec::new();
    for object in store.list("").await? {
        if !catalog.object_key_referenced(&object.key).await? {
            unreferenced.push(object.key);
        }
    }
    Ok(unreferenced)
}
