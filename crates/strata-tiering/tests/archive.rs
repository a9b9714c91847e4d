//! An archive tier (S3 storage class GLACIER, restore required) on the moto server: a read
//! before the restore is refused with `RestoreRequired` (HTTP 503 + Retry-After upstream) and
//! starts the restore; once restored the read returns every byte. Runs when `moto_server` is
//! on PATH (`pip install 'moto[server]'`, `.ci/install.sh`); otherwise prints a skip line.

mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use strata_catalog::TierCatalog;
use strata_config::{S3Config, TierConfig};
use strata_storage::{BlobStore, ObjectStoreBlobStore, StorageErrorKind};
use strata_tiering::{RestoreSettings, Tier, TierSet};
use support::Sandbox;

/// A moto server on a free port, killed when dropped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_moto() -> Option<Moto> {
    let port = TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = match Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            eprintln!("skipped: moto_server is not available ({error})");
            return None;
        }
    };
    let moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Some(moto);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("moto_server did not start on port {port}");
}

fn moto_s3_config(endpoint: &str) -> S3Config {
    S3Config {
        endpoint: Some(endpoint.to_owned()),
        region: Some("us-east-1".to_owned()),
        access_key_id: Some("testing".to_owned()),
        secret_access_key: Some("testing".to_owned()),
        secret_access_key_file: None,
        path_style: true,
        allow_http: true,
    }
}

async fn create_bucket(endpoint: &str, bucket: &str) {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("create the moto bucket");
}

async fn read_all(store: &dyn BlobStore, key: &strata_types::ObjectKey) -> Vec<u8> {
    let (_, mut stream) = store.get(key).await.unwrap();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_archived_objects_are_refused_until_restored() {
    let Some(moto) = start_moto().await else {
        return;
    };
    create_bucket(&moto.endpoint, "strata-archive").await;
    let s3_config = moto_s3_config(&moto.endpoint);
    let archive_tier = Tier::open(
        "cold",
        &TierConfig {
            uri: "s3://strata-archive/cold".to_owned(),
            s3: Some(s3_config.clone()),
            storage_class: Some("GLACIER".to_owned()),
            requires_restore: true,
            replica: None,
        },
        &S3Config::default(),
    )
    .unwrap();
    let local = tempfile::tempdir().unwrap();
    let hot: Arc<dyn BlobStore> =
        Arc::new(ObjectStoreBlobStore::local(local.path().join("hot")).unwrap());
    let unused_replica: Arc<dyn BlobStore> =
        Arc::new(ObjectStoreBlobStore::local(local.path().join("replica")).unwrap());
    let sandbox = Sandbox::new(
        hot.clone(),
        archive_tier.store.clone(),
        unused_replica,
        3,
        4_000,
    )
    .await;
    let restore = RestoreSettings {
        days: 1,
        retrieval_tier: "Standard".to_owned(),
        retry_after_seconds: 900,
        promote_days: 2,
    };
    let service = sandbox.service_with(TierSet::new(hot.clone(), vec![archive_tier]), restore);

    let applied = service.apply(false).await.unwrap();
    assert_eq!(
        (applied.num_moved, applied.num_failed),
        (3, 0),
        "{applied:?}"
    );
    for object in &sandbox.objects {
        assert!(hot.head(&object.key).await.unwrap().is_none());
    }
    let archive = service
        .store()
        .tiers()
        .get("cold")
        .unwrap()
        .archive_opt
        .clone()
        .unwrap();
    let head = archive.head(&sandbox.objects[0].key).await.unwrap();
    assert_eq!(head.storage_class_opt.as_deref(), Some("GLACIER"));
    assert_eq!(head.status, strata_tiering::RestoreStatus::Archived);

    // Shallow fixity needs no restore: size and checksum metadata match.
    let shallow = service.fixity_check(false, None).await.unwrap();
    assert_eq!(shallow.num_ok, 3, "{shallow:?}");

    // A read before the restore is refused with the documented kind and starts the restore.
    let first = &sandbox.objects[0];
    let error = service
        .store()
        .get(&first.key)
        .await
        .err()
        .expect("archived read refused");
    assert_eq!(
        error.kind,
        StorageErrorKind::RestoreRequired {
            retry_after_seconds: 900
        },
        "{error}"
    );
    // moto completes restores at once: the object is now readable, byte for byte.
    assert_eq!(
        read_all(service.store().as_ref(), &first.key).await,
        first.bytes
    );
    // The read that started the restore pinned the study to hot (`promote_days`).
    let pinned = sandbox.catalog.study_retention(&first.study).await.unwrap();
    assert_eq!(pinned.pinned_tier.as_deref(), Some("hot"));

    // Prefetch of a whole study, with promotion back to hot.
    let study = &sandbox.objects[1].study;
    let report = service.restore_study(study, Some(3)).await.unwrap();
    assert!(report.num_objects >= 1);
    assert!(report.pinned_until_ms.is_some());
    for object in sandbox
        .objects
        .iter()
        .filter(|object| &object.study == study)
    {
        assert_eq!(
            read_all(service.store().as_ref(), &object.key).await,
            object.bytes
        );
    }
    // The pin wins over the rules: the restored study comes back to hot.
    let promoted = service.apply(false).await.unwrap();
    assert!(promoted.num_moved >= 1, "{promoted:?}");
    for object in sandbox
        .objects
        .iter()
        .filter(|object| &object.study == study)
    {
        assert!(hot.head(&object.key).await.unwrap().is_some());
        assert_eq!(
            read_all(service.store().as_ref(), &object.key).await,
            object.bytes
        );
    }
}
