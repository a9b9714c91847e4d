//! Helpers shared by the indexer tests.

#![allow(dead_code)] // each test file uses its own subset

use strata_catalog::InstanceRecord;
use strata_catalog::conformance::synthetic_record;
use strata_search::{Indexer, SearchIndex, SearchRequest};
use tokio_util::sync::CancellationToken;

/// A synthetic record whose metadata carries `word` in its Study Description.
pub fn record_with_word(study: u32, series: u32, instance: u32, word: &str) -> InstanceRecord {
    let mut record = synthetic_record(study, series, instance);
    record.metadata_json = format!(
        r#"{{"00080016":{{"vr":"UI","Value":["{}"]}},"00080018":{{"vr":"UI","Value":["{}"]}},"0020000E":{{"vr":"UI","Value":["{}"]}},"00081030":{{"vr":"LO","Value":["{word}"]}}}}"#,
        record.instance.sop_class_uid,
        record.instance.sop_instance_uid,
        record.series.series_instance_uid,
    );
    record
}

pub fn search(index: &SearchIndex, query: &str) -> Vec<(String, u64)> {
    let response = index
        .search(&SearchRequest {
            query: query.to_owned(),
            limit: 100,
            ..SearchRequest::default()
        })
        .expect("search");
    let mut hits: Vec<(String, u64)> = response
        .hits
        .into_iter()
        .map(|hit| (hit.study_instance_uid, hit.summary.num_instances))
        .collect();
    hits.sort();
    hits
}

pub async fn catch_up(indexer: &Indexer) -> u64 {
    indexer
        .catch_up(&CancellationToken::new())
        .await
        .expect("catch up")
}
