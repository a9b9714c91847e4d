//! The conformance suite every [`Catalog`] implementation must pass, on every engine.
//!
//! Compiled for this crate's tests and, with the `testsuite` feature, for other crates. Each
//! scenario is a `pub async fn(Arc<dyn Catalog>)` that expects a fresh, empty catalog and
//! panics on failure. [`catalog_conformance_tests!`](crate::catalog_conformance_tests)
//! generates one `#[tokio::test]` per scenario from a factory:
//!
//! ```text
//! async fn sqlite_catalog() -> Option<TestCatalog> { /* open a catalog on a temp file */ }
//! strata_catalog::catalog_conformance_tests!(sqlite_catalog);
//! ```

mod deleting;
mod matching;
mod ordering;
mod purging;
mod records;
mod results;
mod retrieval;
mod storing;
mod tiering;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::{
    Catalog, CatalogQuery, InstanceRecord, MatchKey, Matcher, QueryLevel, QueryMatch, StoreOutcome,
};

pub use deleting::{
    concurrent_deletes_and_stores, deleting_unknown_uids, deletion_scopes, store_after_delete,
    store_racing_the_removal_of_its_study,
};
pub use matching::{
    every_match_key, list_matching, modalities_in_study, range_matching, sequence_matching,
    single_and_wildcard_case_rules,
};
pub use ordering::fhir_search_support;
pub use purging::{concurrent_purges_and_stores, purges_fence_stores};
pub use records::{
    CT_IMAGE_STORAGE, EXPLICIT_VR_LITTLE_ENDIAN, MR_IMAGE_STORAGE, SECONDARY_CAPTURE_IMAGE_STORAGE,
    synthetic_record, synthetic_series_uid, synthetic_sha256, synthetic_sop_instance_uid,
    synthetic_study_uid, with_other_content,
};
pub use results::{computed_attributes_and_metadata, paging, scopes};
pub use retrieval::retrieval_support;
pub use storing::{
    attribute_merging, concurrent_stores, events_follow_stores, instance_locations_order,
    patients_with_same_id_and_different_issuers, ping_and_count, store_outcomes,
};
pub use tiering::{move_journal, study_facts_and_bookkeeping};

type Teardown = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// A fresh catalog for one scenario, plus what to clean up after it (a temporary directory,
/// a scratch database).
pub struct TestCatalog {
    catalog: Arc<dyn Catalog>,
    teardown: Option<Teardown>,
}

impl TestCatalog {
    /// Wraps a fresh, empty catalog that needs no cleanup.
    pub fn new(catalog: Arc<dyn Catalog>) -> Self {
        Self {
            catalog,
            teardown: None,
        }
    }

    /// Adds a cleanup step that runs after the scenario, whether it passed or panicked.
    pub fn with_teardown<F, Fut>(mut self, teardown: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.teardown = Some(Box::new(move || teardown().boxed()));
        self
    }

    /// Runs `scenario` on the catalog, then the teardown, then re-raises a scenario panic.
    pub async fn run<F, Fut>(self, scenario: F)
    where
        F: FnOnce(Arc<dyn Catalog>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let TestCatalog { catalog, teardown } = self;
        let outcome = AssertUnwindSafe(scenario(catalog)).catch_unwind().await;
        if let Some(teardown) = teardown {
            teardown().await;
        }
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

/// Generates one `#[tokio::test]` per conformance scenario. `$factory` is an async fn (or
/// closure) returning `Option<TestCatalog>`; `None` skips the test (e.g. no database
/// configured). Every test gets its own catalog, so the tests may run in parallel.
#[macro_export]
macro_rules! catalog_conformance_tests {
    ($factory:path) => {
        $crate::catalog_conformance_tests!(@scenarios $factory;
            store_outcomes,
            patients_with_same_id_and_different_issuers,
            concurrent_stores,
            attribute_merging,
            events_follow_stores,
            instance_locations_order,
            ping_and_count,
            single_and_wildcard_case_rules,
            every_match_key,
            range_matching,
            list_matching,
            modalities_in_study,
            sequence_matching,
            scopes,
            paging,
            computed_attributes_and_metadata,
            fhir_search_support,
            deletion_scopes,
            deleting_unknown_uids,
            store_after_delete,
            concurrent_deletes_and_stores,
            store_racing_the_removal_of_its_study,
            purges_fence_stores,
            concurrent_purges_and_stores,
            retrieval_support,
        );
    };
    (@scenarios $factory:path; $($scenario:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                if let Some(test_catalog) = $factory().await {
                    test_catalog.run($crate::conformance::$scenario).await;
                }
            }
        )*
    };
}

/// Stores `records` one after the other and asserts each was created.
pub(crate) async fn store_all(catalog: &dyn Catalog, records: &[InstanceRecord]) {
    for record in records {
        let outcome = catalog
            .store_instance(record)
            .await
            .expect("store succeeds");
        assert_eq!(
            outcome,
            StoreOutcome::Created,
            "storing {}",
            record.instance.sop_instance_uid
        );
    }
}

/// Returns a query at `level` with `filters`, unlimited, without metadata.
pub(crate) fn query_at(level: QueryLevel, filters: Vec<(MatchKey, Matcher)>) -> CatalogQuery {
    CatalogQuery {
        level,
        study_scope: None,
        series_scope: None,
        filters,
        limit: None,
        offset: 0,
        with_metadata: false,
    }
}

/// Runs `query` and returns the UIDs of the returned entities (of the query's level), in order.
pub(crate) async fn matched_uids(catalog: &dyn Catalog, query: &CatalogQuery) -> Vec<String> {
    let matches = catalog.query(query).await.expect("query succeeds");
    matches
        .iter()
        .map(|found| entity_uid(query.level, found))
        .collect()
}

/// Returns the UID of the entity a match stands for.
pub(crate) fn entity_uid(level: QueryLevel, found: &QueryMatch) -> String {
    match level {
        QueryLevel::Study => found.study.study_instance_uid.to_string(),
        QueryLevel::Series => found
            .series
            .as_ref()
            .expect("series level has series")
            .series_instance_uid
            .to_string(),
        QueryLevel::Instance => found
            .instance
            .as_ref()
            .expect("instance level has instance")
            .sop_instance_uid
            .to_string(),
    }
}

/// Returns the Study Instance UIDs a study-level query with `filters` returns, in order.
pub(crate) async fn matching_studies(
    catalog: &dyn Catalog,
    filters: Vec<(MatchKey, Matcher)>,
) -> Vec<String> {
    matched_uids(catalog, &query_at(QueryLevel::Study, filters)).await
}

/// Shorthand for `Matcher::Single`.
pub(crate) fn single(value: &str) -> Matcher {
    Matcher::Single(value.to_owned())
}

/// Shorthand for `Matcher::Wildcard`.
pub(crate) fn wildcard(pattern: &str) -> Matcher {
    Matcher::Wildcard(pattern.to_owned())
}

/// Shorthand for `Matcher::Range`; empty strings are open ends.
pub(crate) fn range(from: &str, to: &str) -> Matcher {
    let bound = |value: &str| (!value.is_empty()).then(|| value.to_owned());
    Matcher::Range {
        from: bound(from),
        to: bound(to),
    }
}

/// Returns the Study Instance UID text of synthetic study `study`.
pub(crate) fn study_uid_text(study: u32) -> String {
    synthetic_study_uid(study).to_string()
}
