//! Moves, crash recovery, fixity and deletion against the in-process S3 server (hot, cold and
//! the cold replica are three prefixes of its bucket), and against an external S3 server
//! (Garage in CI) when `STRATA_TEST_S3_*` is set.

mod support;

use std::sync::Arc;

use strata_catalog::{StudyRetention, TierCatalog};
use strata_config::S3Config;
use strata_storage::testsuite::InProcessS3;
use strata_storage::{BlobStore, ObjectStoreBlobStore};
use strata_tiering::{MoveStep, TieringError, check_deletion_allowed};
use support::Sandbox;

async fn in_process_sandbox(num_objects: u32) -> (InProcessS3, Sandbox) {
    let s3 = InProcessS3::start().await.unwrap();
    let store = |prefix: &str| -> Arc<dyn BlobStore> { Arc::new(s3.blob_store(prefix).unwrap()) };
    let sandbox = Sandbox::new(
        store("hot"),
        store("cold"),
        store("cold-replica"),
        num_objects,
        3_000,
    )
    .await;
    (s3, sandbox)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_moves_to_cold_and_back_keep_every_byte_readable() {
    let (_s3, mut sandbox) = in_process_sandbox(6).await;
    let service = sandbox.service();

    let dry_run = service.apply(true).await.unwrap();
    assert_eq!(dry_run.num_planned, 6);
    assert_eq!(dry_run.num_moved, 0);
    assert!(
        dry_run
            .moves
            .iter()
            .all(|planned| planned.to_tier == "cold")
    );
    assert_eq!(sandbox.assert_single_location().await, (6, 0));

    let applied = service.apply(false).await.unwrap();
    assert_eq!((applied.num_moved, applied.num_failed), (6, 0));
    assert_eq!(sandbox.assert_single_location().await, (0, 6));
    sandbox.assert_all_readable(service.store().as_ref()).await;
    let status = service.status().await.unwrap();
    let cold = status
        .tiers
        .iter()
        .find(|tier| tier.name == "cold")
        .unwrap();
    assert_eq!(cold.num_objects, 6);
    assert_eq!(cold.num_bytes, 6 * 3_000);
    assert_eq!(status.num_pending_moves, 0);
    // A second pass has nothing to do.
    assert_eq!(service.apply(false).await.unwrap().num_planned, 0);

    // Reads were recorded per study, in memory, and flushed in one batch.
    assert_eq!(service.store().flush_accesses().await.unwrap(), 2);
    let facts = sandbox
        .catalog
        .study_facts(&sandbox.objects[0].study)
        .await
        .unwrap()
        .unwrap();
    assert!(facts.last_access_ms.is_some());

    // Without rules every study belongs on hot again.
    sandbox.config.rules.clear();
    let service = sandbox.service();
    assert_eq!(service.apply(false).await.unwrap().num_moved, 6);
    assert_eq!(sandbox.assert_single_location().await, (6, 0));
    sandbox.assert_all_readable(service.store().as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_crash_after_any_step_is_recovered_without_loss() {
    for step in [
        MoveStep::Journaled,
        MoveStep::Copied,
        MoveStep::Verified,
        MoveStep::Committed,
        MoveStep::SourceDeleted,
    ] {
        let (_s3, sandbox) = in_process_sandbox(3).await;
        let crashing = sandbox.service();
        crashing.mover().crash_after(Some(step));
        match crashing.apply(false).await {
            Err(TieringError::InjectedCrash(crashed_at)) => assert_eq!(crashed_at, step),
            other => panic!("expected an injected crash after {step:?}, got {other:?}"),
        }
        drop(crashing);
        assert!(!sandbox.catalog.moves().await.unwrap().is_empty());

        // Killed mid-move: every object is still readable, before any recovery.
        let restarted = sandbox.service();
        sandbox
            .assert_all_readable(restarted.store().as_ref())
            .await;

        let num_resolved = restarted.mover().recover().await.unwrap();
        assert!(num_resolved >= 1, "{step:?}");
        assert!(
            sandbox.catalog.moves().await.unwrap().is_empty(),
            "{step:?}"
        );
        // One location per object, the one the catalog names.
        let (num_hot, num_cold) = sandbox.assert_single_location().await;
        assert_eq!(num_hot + num_cold, 3);
        sandbox
            .assert_all_readable(restarted.store().as_ref())
            .await;

        // The next pass finishes the job.
        restarted.apply(false).await.unwrap();
        assert_eq!(sandbox.assert_single_location().await, (0, 3), "{step:?}");
        sandbox
            .assert_all_readable(restarted.store().as_ref())
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_fixity_reports_a_flipped_byte_and_repairs_from_the_replica() {
    let (s3, sandbox) = in_process_sandbox(4).await;
    let service = sandbox.service();
    // Every object goes cold, with a replica.
    service.apply(false).await.unwrap();
    let cold_object = &sandbox.objects[0];

    let flip = |key: &strata_types::ObjectKey, prefix: &str| {
        let path = s3
            .data_dir()
            .join(&s3.bucket)
            .join(prefix)
            .join(key.as_str());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
    };
    flip(&cold_object.key, "cold");
    let shallow = service.fixity_check(false, None).await.unwrap();
    // Same size: a shallow check on a store without checksum metadata cannot see it.
    assert_eq!(shallow.num_checked, 4);
    let deep = service.fixity_check(true, None).await.unwrap();
    assert_eq!(deep.num_checked, 4);
    assert_eq!(deep.num_repaired, 1, "{deep:?}");
    assert!(deep.failures.is_empty(), "{deep:?}");
    sandbox.assert_all_readable(service.store().as_ref()).await;

    // Both copies damaged: reported, recorded, not repaired.
    let other = &sandbox.objects[1];
    flip(&other.key, "cold");
    flip(&other.key, "cold-replica");
    let deep = service.fixity_check(true, None).await.unwrap();
    assert_eq!(deep.failures.len(), 1, "{deep:?}");
    assert_eq!(deep.failures[0].object_key, other.key.as_str());
    assert_eq!(deep.failures[0].status, "mismatch");
    let status = service.status().await.unwrap();
    assert_eq!(status.fixity_failures.len(), 1);

    // A deleted object is reported missing.
    s3.blob_store("cold")
        .unwrap()
        .delete(&sandbox.objects[2].key)
        .await
        .unwrap();
    s3.blob_store("cold-replica")
        .unwrap()
        .delete(&sandbox.objects[2].key)
        .await
        .unwrap();
    let deep = service.fixity_check(true, None).await.unwrap();
    assert!(
        deep.failures
            .iter()
            .any(|failure| failure.status == "missing")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_delete_removes_every_copy_and_respects_holds() {
    let (_s3, sandbox) = in_process_sandbox(2).await;
    let service = sandbox.service();
    service.apply(false).await.unwrap();
    let object = &sandbox.objects[0];
    let tier_catalog: Arc<dyn TierCatalog> = sandbox.catalog.clone();

    service
        .set_retention(&object.study, true, None)
        .await
        .unwrap();
    let refused =
        check_deletion_allowed(tier_catalog.as_ref(), &sandbox.config, &object.study).await;
    assert!(matches!(refused, Err(TieringError::DeletionRefused(_))));
    service
        .set_retention(&object.study, false, Some(i64::MAX))
        .await
        .unwrap();
    assert!(
        check_deletion_allowed(tier_catalog.as_ref(), &sandbox.config, &object.study)
            .await
            .is_err()
    );
    tier_catalog
        .set_study_retention(&object.study, &StudyRetention::default())
        .await
        .unwrap();
    let mut config = sandbox.config.clone();
    config.min_retention_days = 3650;
    assert!(
        check_deletion_allowed(tier_catalog.as_ref(), &config, &object.study)
            .await
            .is_err()
    );
    check_deletion_allowed(tier_catalog.as_ref(), &sandbox.config, &object.study)
        .await
        .unwrap();

    service.store().delete(&object.key).await.unwrap();
    assert!(sandbox.cold.head(&object.key).await.unwrap().is_none());
    assert!(sandbox.replica.head(&object.key).await.unwrap().is_none());
    assert!(sandbox.hot.head(&object.key).await.unwrap().is_none());
    assert_eq!(
        tier_catalog.object_tier(&object.key).await.unwrap().tier,
        "hot"
    );
}

/// The same flows on an external S3 server (Garage in CI), under fresh prefixes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_moves_and_fixity_on_external_s3() {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|value| !value.trim().is_empty())
    };
    let (Some(endpoint), Some(bucket), Some(access_key_id), Some(secret_access_key)) = (
        var("STRATA_TEST_S3_ENDPOINT"),
        var("STRATA_TEST_S3_BUCKET"),
        var("STRATA_TEST_S3_ACCESS_KEY_ID"),
        var("STRATA_TEST_S3_SECRET_ACCESS_KEY"),
    ) else {
        eprintln!("skipped: STRATA_TEST_S3_* is not set, external s3 tiering test did not run");
        return;
    };
    let config = S3Config {
        endpoint: Some(endpoint.clone()),
        region: Some(var("STRATA_TEST_S3_REGION").unwrap_or_else(|| "garage".to_owned())),
        access_key_id: Some(access_key_id),
        secret_access_key: Some(secret_access_key),
        secret_access_key_file: None,
        path_style: true,
        allow_http: endpoint.starts_with("http://"),
    };
    // Hot and cold in two buckets when CI provides a second one (`.ci/services.sh` creates
    // `strata-ci-cold`); otherwise two prefixes of one bucket.
    let cold_bucket = var("STRATA_TEST_S3_COLD_BUCKET").unwrap_or_else(|| bucket.clone());
    let run = format!("strata-tiering-{}", std::process::id());
    let store = |bucket: &str, tier: &str| -> Arc<dyn BlobStore> {
        Arc::new(
            ObjectStoreBlobStore::s3_with_env(
                bucket,
                &format!("{run}/{tier}"),
                &config,
                Vec::new(),
            )
            .unwrap(),
        )
    };
    let sandbox = Sandbox::new(
        store(&bucket, "hot"),
        store(&cold_bucket, "cold"),
        store(&cold_bucket, "replica"),
        6,
        5_000,
    )
    .await;
    eprintln!("external s3 tiering: hot in bucket {bucket}, cold and replica in {cold_bucket}");
    let service = sandbox.service();
    assert_eq!(service.apply(false).await.unwrap().num_moved, 6);
    assert_eq!(sandbox.assert_single_location().await, (0, 6));
    sandbox.assert_all_readable(service.store().as_ref()).await;

    // Corrupt one cold object on purpose (same size), then repair it from the replica.
    let victim = &sandbox.objects[0];
    let mut damaged = victim.bytes.clone();
    damaged[7] ^= 0x01;
    let path = sandbox.directory.path().join("damaged");
    std::fs::write(&path, &damaged).unwrap();
    sandbox
        .cold
        .put_file(&victim.key, &path, &support::sha256_hex(&damaged))
        .await
        .unwrap();
    let report = service.fixity_check(true, None).await.unwrap();
    assert_eq!(report.num_repaired, 1, "{report:?}");
    sandbox.assert_all_readable(service.store().as_ref()).await;

    for object in &sandbox.objects {
        service.store().delete(&object.key).await.unwrap();
        assert!(sandbox.cold.head(&object.key).await.unwrap().is_none());
        assert!(sandbox.replica.head(&object.key).await.unwrap().is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_admin_router_reports_and_refuses_bad_input() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let (_s3, sandbox) = in_process_sandbox(2).await;
    let service = sandbox.service();
    let router = strata_tiering::router(service.clone());
    let call = |method: &str, uri: &str, body: &str| {
        axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_owned()))
            .unwrap()
    };
    let json = |response: axum::http::Response<axum::body::Body>| async move {
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
        )
    };

    let (status, body) = json(
        router
            .clone()
            .oneshot(call("POST", "/api/tiering/apply?dry_run=true", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["num_planned"], 2);
    assert_eq!(body["num_moved"], 0);
    let (status, body) = json(
        router
            .clone()
            .oneshot(call("POST", "/api/tiering/apply", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["num_moved"], 2);
    let (_, body) = json(
        router
            .clone()
            .oneshot(call("GET", "/api/tiering/status", ""))
            .await
            .unwrap(),
    )
    .await;
    let cold = body["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|tier| tier["name"] == "cold")
        .unwrap()
        .clone();
    assert_eq!(cold["num_objects"], 2);
    let (status, body) = json(
        router
            .clone()
            .oneshot(call("POST", "/api/tiering/fixity?deep=true", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["num_ok"], 2);

    let response = router
        .clone()
        .oneshot(call("POST", "/api/studies/1.2.3.4.5.999/restore", ""))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let response = router
        .clone()
        .oneshot(call("POST", "/api/studies/bad%20uid%21/restore", ""))
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let study = sandbox.objects[0].study.to_string();
    let response = router
        .clone()
        .oneshot(call(
            "PUT",
            &format!("/api/tiering/studies/{study}/retention"),
            "{\"legal\": 1}",
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let (status, body) = json(
        router
            .clone()
            .oneshot(call(
                "PUT",
                &format!("/api/tiering/studies/{study}/retention"),
                "{\"legal_hold\": true}",
            ))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["legal_hold"], true);
    // Restoring a study on a non-archive tier: everything readable at once.
    let (status, body) = json(
        router
            .oneshot(call("POST", &format!("/api/studies/{study}/restore"), ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["num_restoring"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_corrupt_source_is_never_moved_and_a_stale_tier_is_re_resolved() {
    let (s3, sandbox) = in_process_sandbox(3).await;
    // A reader resolves (and caches) every object on hot.
    let reader = sandbox.service();
    sandbox.assert_all_readable(reader.store().as_ref()).await;

    // One hot object is damaged: its move is refused, the others move.
    let victim = &sandbox.objects[0];
    let path = s3
        .data_dir()
        .join(&s3.bucket)
        .join("hot")
        .join(victim.key.as_str());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[3] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let mover = sandbox.service();
    let report = mover.apply(false).await.unwrap();
    assert_eq!((report.num_moved, report.num_failed), (2, 1), "{report:?}");
    assert!(
        report.failures[0].contains("corrupt"),
        "{:?}",
        report.failures
    );
    assert!(sandbox.catalog.moves().await.unwrap().is_empty());
    assert_eq!(
        sandbox.catalog.object_tier(&victim.key).await.unwrap().tier,
        "hot"
    );
    assert!(sandbox.cold.head(&victim.key).await.unwrap().is_none());

    // The first reader's cache still says hot for the moved objects: the read finds them
    // missing there, resolves again and reads cold.
    for object in &sandbox.objects[1..] {
        let (_, mut stream) = reader.store().get(&object.key).await.unwrap();
        let mut read = Vec::new();
        while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
            read.extend_from_slice(&chunk.unwrap());
        }
        assert!(read == object.bytes);
    }
}
