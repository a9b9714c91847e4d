//! Runs the conformance suite on an external S3-compatible server (Garage in CI) when
//! `STRATA_TEST_S3_ENDPOINT`, `STRATA_TEST_S3_BUCKET`, `STRATA_TEST_S3_ACCESS_KEY_ID` and
//! `STRATA_TEST_S3_SECRET_ACCESS_KEY` are set (`STRATA_TEST_S3_REGION` defaults to `garage`).
//! Each run works under a fresh random prefix and deletes it afterwards. Without the variables
//! the test prints a skip line and passes.

use strata_config::S3Config;
use strata_storage::{BlobStore, ObjectStoreBlobStore, conformance};

struct ExternalS3 {
    endpoint: String,
    bucket: String,
    config: S3Config,
}

fn external_s3_from_env() -> Option<ExternalS3> {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|value| !value.trim().is_empty())
    };
    let endpoint = var("STRATA_TEST_S3_ENDPOINT")?;
    let bucket = var("STRATA_TEST_S3_BUCKET")?;
    let access_key_id = var("STRATA_TEST_S3_ACCESS_KEY_ID")?;
    let secret_access_key = var("STRATA_TEST_S3_SECRET_ACCESS_KEY")?;
    let region = var("STRATA_TEST_S3_REGION").unwrap_or_else(|| "garage".to_owned());
    let config = S3Config {
        endpoint: Some(endpoint.clone()),
        region: Some(region),
        access_key_id: Some(access_key_id),
        secret_access_key: Some(secret_access_key),
        secret_access_key_file: None,
        path_style: true,
        allow_http: endpoint.starts_with("http://"),
    };
    Some(ExternalS3 {
        endpoint,
        bucket,
        config,
    })
}

#[tokio::test]
async fn test_external_s3_passes_conformance() {
    let Some(external) = external_s3_from_env() else {
        eprintln!(
            "skipping test_external_s3_passes_conformance: set STRATA_TEST_S3_ENDPOINT, \
             STRATA_TEST_S3_BUCKET, STRATA_TEST_S3_ACCESS_KEY_ID and \
             STRATA_TEST_S3_SECRET_ACCESS_KEY to run it"
        );
        return;
    };
    let prefix = format!("strata-conformance-{}", uuid::Uuid::new_v4());
    let store =
        ObjectStoreBlobStore::s3_with_env(&external.bucket, &prefix, &external.config, Vec::new())
            .expect("open external s3 store");
    eprintln!(
        "running the conformance suite on {} ({})",
        store.describe(),
        external.endpoint
    );

    // Run the suite in a task so that the prefix is cleaned up even if it panics.
    let suite_store = store.clone();
    let outcome = tokio::spawn(async move {
        conformance::run_conformance_suite(&suite_store).await;
    })
    .await;

    let leftovers = store.list("").await.expect("list the test prefix");
    for object in &leftovers {
        store
            .delete(&object.key)
            .await
            .expect("delete a leftover object");
    }
    if let Err(join_error) = outcome {
        std::panic::resume_unwind(join_error.into_panic());
    }
    assert!(
        leftovers.is_empty(),
        "the suite left objects behind: {leftovers:?}"
    );
}
