//! Every file of the shared corpus through STOW-RS, answered as its MANIFEST row says, and
//! every stored file back through WADO-RS with an identical data set, on every backend.

use std::collections::{BTreeSet, HashMap};

use strata_tests::corpus::{self, Entry};
use strata_tests::{Backend, TestArchive};

/// Returns the FailureReason codes of a STOW-RS response.
fn failure_reasons(response: &serde_json::Value) -> Vec<u64> {
    response["00081198"]["Value"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item["00081197"]["Value"][0].as_u64())
                .collect()
        })
        .unwrap_or_default()
}

fn referenced_uids(response: &serde_json::Value) -> Vec<String> {
    response["00081199"]["Value"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item["00081155"]["Value"][0].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn run_corpus(backend: Backend) -> anyhow::Result<()> {
    let entries = corpus::entries();
    if entries.is_empty() {
        eprintln!("skipped: ../shared/corpus not found");
        return Ok(());
    }
    let archive = TestArchive::start(backend).await?;
    let mut stored: HashMap<String, Entry> = HashMap::new();
    let mut problems = Vec::new();
    // Valid files first, then the broken ones (several are broken copies of valid instances,
    // so a recovered one meets its original as a duplicate), then the conflicting copy of an
    // already stored instance: the archive must keep serving throughout.
    let (invalid, valid): (Vec<&Entry>, Vec<&Entry>) = entries
        .iter()
        .partition(|entry| entry.path.starts_with("invalid/"));
    let (conflicts, invalid): (Vec<&Entry>, Vec<&Entry>) = invalid
        .into_iter()
        .partition(|entry| entry.expected == "conflict");
    let ordered: Vec<&Entry> = valid.into_iter().chain(invalid).chain(conflicts).collect();
    let mut groups_seen = BTreeSet::new();
    for entry in ordered {
        let (status, response) = archive.stow("/studies", &[entry.bytes()]).await?;
        let reasons = failure_reasons(&response);
        let referenced = referenced_uids(&response);
        let first_of_group = entry.same_instance_group.is_empty()
            || groups_seen.insert(entry.same_instance_group.clone());
        match entry.expected.as_str() {
            "accept" | "accept-nodecode" | "accept-lenient" if first_of_group => {
                if !(status == 200 || status == 202)
                    || referenced != [entry.sop_instance_uid.clone()]
                {
                    problems.push(format!(
                        "{}: expected stored, got {status} {response}",
                        entry.path
                    ));
                } else {
                    stored.insert(entry.sop_instance_uid.clone(), entry.clone());
                }
            }
            "accept" | "accept-nodecode" | "accept-lenient" | "conflict" => {
                // Same SOP Instance UID as a stored member of its group, different bytes.
                if status != 409 || reasons != [0x0111] {
                    problems.push(format!(
                        "{}: expected a duplicate refusal (409, 0111), got {status} {response}",
                        entry.path
                    ));
                }
            }
            "parse-only" | "reject" => {
                if status != 409 || reasons.len() != 1 {
                    problems.push(format!(
                        "{}: expected a refusal with a FailureReason, got {status} {response}",
                        entry.path
                    ));
                }
            }
            "reject-or-recover" => {
                if status == 200 || status == 202 {
                    stored.insert(referenced[0].clone(), entry.clone());
                } else if status != 409 || reasons.len() != 1 {
                    problems.push(format!(
                        "{}: expected a refusal or a recovery, got {status} {response}",
                        entry.path
                    ));
                }
            }
            other => problems.push(format!("{}: unknown expectation {other}", entry.path)),
        }
        anyhow::ensure!(
            archive.get("/studies?limit=1").await?.status() == 200,
            "archive stopped answering after {}",
            entry.path
        );
    }
    assert!(
        problems.is_empty(),
        "{backend:?}: {} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );

    // Round trip: every stored instance comes back with the same data set bytes.
    for (sop_instance_uid, entry) in &stored {
        let instances = archive
            .get_json(&format!("/instances?SOPInstanceUID={sop_instance_uid}"))
            .await?;
        let found = instances.as_array().expect("array");
        assert_eq!(found.len(), 1, "{}: QIDO finds it once", entry.path);
        let retrieve_url = found[0]["00081190"]["Value"][0]
            .as_str()
            .expect("RetrieveURL");
        let path = retrieve_url
            .split("/dicomweb")
            .nth(1)
            .expect("path under /dicomweb");
        let parts = archive.retrieve_as_stored(path).await?;
        assert_eq!(parts.len(), 1, "{}", entry.path);
        let original = entry.bytes();
        // Stored as received; served as stored (`transfer-syntax=*`) except Implicit VR Little
        // Endian and Explicit VR Big Endian (and bare data sets, implicit by definition),
        // which the web never serves: those come back as Explicit VR Little Endian, with the
        // same elements and values.
        const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
        const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";
        let stored_syntax = corpus::transfer_syntax_of(&original);
        let served_syntax = corpus::transfer_syntax_of(&parts[0]);
        let same_bytes = corpus::dataset_bytes(&parts[0]) == corpus::dataset_bytes(&original);
        if !same_bytes
            && matches!(
                stored_syntax.as_deref(),
                None | Some(IMPLICIT_LE | EXPLICIT_BE)
            )
        {
            assert_eq!(
                served_syntax.as_deref(),
                Some("1.2.840.10008.1.2.1"),
                "{backend:?}: {}: served in explicit VR little endian",
                entry.path
            );
            if let Err(difference) = corpus::same_dataset(&parts[0], &original) {
                panic!(
                    "{backend:?}: {}: data set differs after the round trip: {difference}",
                    entry.path
                );
            }
        } else {
            if stored_syntax.is_some() {
                assert_eq!(served_syntax, stored_syntax, "{}", entry.path);
            }
            assert!(
                same_bytes,
                "{backend:?}: {}: data set differs after the round trip",
                entry.path
            );
        }
        if !entry.study_instance_uid.is_empty() {
            assert_eq!(
                found[0]["0020000D"]["Value"][0].as_str(),
                Some(entry.study_instance_uid.as_str()),
                "{}",
                entry.path
            );
        }
    }

    // Nothing half-stored: exactly one object per catalogued instance, none for refusals.
    let objects = archive.store.list("").await?;
    let instances = archive.get_json("/instances?limit=1000").await?;
    assert_eq!(
        instances.as_array().expect("array").len(),
        stored.len(),
        "{backend:?}: catalog instances"
    );
    assert_eq!(
        objects.len(),
        stored.len(),
        "{backend:?}: objects in the store: {objects:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_corpus_round_trip_on_every_backend() -> anyhow::Result<()> {
    for backend in Backend::available() {
        run_corpus(backend).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_series_hierarchy_and_restart() -> anyhow::Result<()> {
    let entries: Vec<Entry> = corpus::entries()
        .into_iter()
        .filter(|entry| entry.path.starts_with("series/"))
        .collect();
    if entries.is_empty() {
        eprintln!("skipped: ../shared/corpus not found");
        return Ok(());
    }
    let mut archive = TestArchive::start(Backend::SqliteLocal).await?;
    let objects: Vec<Vec<u8>> = entries.iter().map(Entry::bytes).collect();
    let (status, response) = archive.stow("/studies", &objects).await?;
    assert_eq!(status, 200, "{response}");
    assert_eq!(referenced_uids(&response).len(), 7);
    // Re-sending identical instances succeeds without duplicates.
    let (status, _) = archive.stow("/studies", &objects).await?;
    assert_eq!(status, 200);
    archive.restart().await?;
    let studies = archive.get_json("/studies?PatientID=77654033").await?;
    assert_eq!(studies.as_array().unwrap().len(), 2, "{studies}");
    let series = archive.get_json("/series?PatientID=77654033").await?;
    assert_eq!(series.as_array().unwrap().len(), 4);
    let instances = archive.get_json("/instances?PatientID=77654033").await?;
    assert_eq!(instances.as_array().unwrap().len(), 7);
    let total: u64 = studies
        .as_array()
        .unwrap()
        .iter()
        .map(|study| study["00201208"]["Value"][0].as_u64().unwrap())
        .sum();
    assert_eq!(total, 7);
    // The CT study comes back whole.
    let ct_study = entries
        .iter()
        .find(|entry| entry.modality == "CT")
        .unwrap()
        .study_instance_uid
        .clone();
    let parts = archive.retrieve(&format!("/studies/{ct_study}")).await?;
    assert_eq!(parts.len(), 4);
    Ok(())
}
