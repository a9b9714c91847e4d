//! QIDO-RS over HTTP: every required matching key at each level, wildcards, ranges, UID
//! lists, includefield and paging, checked against what was stored; plus WADO-RS errors.

use std::collections::BTreeSet;

use strata_tests::synthetic::SyntheticInstance;
use strata_tests::{Backend, TestArchive};

/// Three studies: two for patient "P1" of two different issuers (same Patient ID), one for
/// patient "P2". Study 1: CT with 2 series (3 + 2 instances); study 2: MR, 1 series;
/// study 3: CT + SR.
fn dataset() -> Vec<SyntheticInstance> {
    let study_one = |i: &mut SyntheticInstance| {
        i.patient_id = "P1".into();
        i.issuer_of_patient_id = "HOSPITAL_A".into();
        i.patient_name = "Müller^Anna".into();
        i.study_date = "20240115".into();
        i.study_time = "093000".into();
        i.accession_number = "ACC-1".into();
        i.referring_physician_name = "House^Gregory".into();
        i.study_description = "CT THORAX".into();
    };
    let study_three = |i: &mut SyntheticInstance| {
        i.patient_id = "P2".into();
        i.patient_name = "Smith^John".into();
        i.study_date = "20221231".into();
        i.study_time = "235959".into();
        i.accession_number = "ACC-3".into();
        i.study_description = "CT HEAD".into();
    };
    let mut instances = Vec::new();
    let mut make = |study: u32, series: u32, index: u32, edit: &dyn Fn(&mut SyntheticInstance)| {
        let mut instance = SyntheticInstance::ct(42, study, series, index, 8, 8);
        edit(&mut instance);
        instances.push(instance);
    };
    for index in 1..=3 {
        make(1, 1, index, &|i| {
            study_one(i);
            i.scheduled_procedure_step_id = Some("SPS-1".into());
        });
    }
    for index in 1..=2 {
        make(1, 2, index, &|i| {
            study_one(i);
            i.series_description = "CORONAL".into();
        });
    }
    make(2, 1, 1, &|i| {
        i.patient_id = "P1".into();
        i.issuer_of_patient_id = "HOSPITAL_B".into();
        i.patient_name = "Other^Person".into();
        i.study_date = "20230610".into();
        i.study_time = "141500".into();
        i.accession_number = "ACC-2".into();
        i.referring_physician_name = "Wilson^James".into();
        i.modality = "MR".into();
        i.study_description = "MR KNEE".into();
    });
    make(3, 1, 1, &study_three);
    make(3, 2, 1, &|i| {
        study_three(i);
        i.modality = "SR".into();
    });
    instances
}

fn uids(results: &serde_json::Value, tag: &str) -> BTreeSet<String> {
    results
        .as_array()
        .expect("array")
        .iter()
        .map(|item| {
            item[tag]["Value"][0]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

fn study_uid(study: u32) -> String {
    format!("2.25.42.1.{study}")
}

async fn studies(archive: &TestArchive, query: &str) -> BTreeSet<String> {
    uids(
        &archive
            .get_json(&format!("/studies?{query}"))
            .await
            .expect(query),
        "0020000D",
    )
}

fn set(studies: &[u32]) -> BTreeSet<String> {
    studies.iter().map(|study| study_uid(*study)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_qido_matching_keys_and_rules() -> anyhow::Result<()> {
    let archive = TestArchive::start(Backend::SqliteLocal).await?;
    let objects: Vec<Vec<u8>> = dataset().iter().map(SyntheticInstance::to_part10).collect();
    let (status, response) = archive.stow("/studies", &objects).await?;
    assert_eq!(status, 200, "{response}");

    // Study level, every required key.
    assert_eq!(studies(&archive, "").await, set(&[1, 2, 3]));
    assert_eq!(studies(&archive, "PatientID=P1").await, set(&[1, 2]));
    assert_eq!(
        studies(&archive, "PatientID=P1&IssuerOfPatientID=HOSPITAL_B").await,
        set(&[2])
    );
    assert_eq!(studies(&archive, "00100020=P2").await, set(&[3]));
    assert_eq!(
        studies(&archive, "PatientName=M%C3%BCller%5EAnna").await,
        set(&[1])
    );
    assert_eq!(
        studies(&archive, "PatientName=m%C3%BCller*").await,
        set(&[1]),
        "PN matching ignores case"
    );
    assert_eq!(studies(&archive, "PatientName=S?ith*").await, set(&[3]));
    assert_eq!(studies(&archive, "PatientName=*o*").await, set(&[2, 3]));
    assert_eq!(studies(&archive, "StudyDate=20240115").await, set(&[1]));
    assert_eq!(
        studies(&archive, "StudyDate=20230101-20241231").await,
        set(&[1, 2])
    );
    assert_eq!(studies(&archive, "StudyDate=-20230101").await, set(&[3]));
    assert_eq!(studies(&archive, "StudyDate=20230611-").await, set(&[1]));
    assert_eq!(
        studies(&archive, "StudyTime=090000-150000").await,
        set(&[1, 2])
    );
    assert_eq!(studies(&archive, "AccessionNumber=ACC-2").await, set(&[2]));
    assert_eq!(
        studies(&archive, "AccessionNumber=acc-2").await,
        set(&[]),
        "non-PN matching is case-sensitive"
    );
    assert_eq!(
        studies(&archive, "ReferringPhysicianName=wilson*").await,
        set(&[2])
    );
    assert_eq!(studies(&archive, "ModalitiesInStudy=MR").await, set(&[2]));
    assert_eq!(studies(&archive, "ModalitiesInStudy=SR").await, set(&[3]));
    assert_eq!(
        studies(&archive, "StudyInstanceUID=2.25.42.1.1,2.25.42.1.3").await,
        set(&[1, 3])
    );
    assert_eq!(
        studies(&archive, "StudyInstanceUID=2.25.42.1.1%5C2.25.42.1.2").await,
        set(&[1, 2])
    );
    assert_eq!(studies(&archive, "StudyID=1").await, set(&[1, 2, 3]));
    assert_eq!(
        studies(&archive, "PatientID=P1&ModalitiesInStudy=CT").await,
        set(&[1])
    );

    // Computed attributes and return keys.
    let study = archive
        .get_json("/studies?StudyInstanceUID=2.25.42.1.1")
        .await?;
    let study = &study[0];
    assert_eq!(
        study["00201206"]["Value"][0], 2,
        "NumberOfStudyRelatedSeries"
    );
    assert_eq!(
        study["00201208"]["Value"][0], 5,
        "NumberOfStudyRelatedInstances"
    );
    assert_eq!(study["00080061"]["Value"], serde_json::json!(["CT"]));
    assert_eq!(study["00100010"]["Value"][0]["Alphabetic"], "Müller^Anna");
    assert_eq!(
        study["00081190"]["Value"][0].as_str().unwrap(),
        format!("{}/studies/2.25.42.1.1", archive.base_url)
    );
    let study3 = archive
        .get_json("/studies?StudyInstanceUID=2.25.42.1.3")
        .await?;
    assert_eq!(
        study3[0]["00080061"]["Value"],
        serde_json::json!(["CT", "SR"])
    );

    // Series level, nested and across studies.
    let series = archive.get_json("/studies/2.25.42.1.1/series").await?;
    assert_eq!(
        uids(&series, "0020000E"),
        ["2.25.42.1.1.1", "2.25.42.1.1.2"].map(String::from).into()
    );
    // Results come in storage order, and the parts of one STOW-RS request are stored
    // concurrently: find each series by its UID.
    let related_instances = |series_uid: &str| {
        series
            .as_array()
            .into_iter()
            .flatten()
            .find(|item| item["0020000E"]["Value"][0] == series_uid)
            .map(|item| item["00201209"]["Value"][0].clone())
    };
    assert_eq!(
        related_instances("2.25.42.1.1.1"),
        Some(serde_json::json!(3)),
        "NumberOfSeriesRelatedInstances"
    );
    assert_eq!(
        related_instances("2.25.42.1.1.2"),
        Some(serde_json::json!(2)),
        "NumberOfSeriesRelatedInstances"
    );
    let series = archive
        .get_json("/studies/2.25.42.1.1/series?SeriesDescription=CORONAL")
        .await?;
    assert_eq!(
        uids(&series, "0020000E"),
        ["2.25.42.1.1.2"].map(String::from).into()
    );
    let series = archive.get_json("/series?Modality=MR").await?;
    assert_eq!(
        uids(&series, "0020000E"),
        ["2.25.42.1.2.1"].map(String::from).into()
    );
    assert_eq!(
        series[0]["00100020"]["Value"][0], "P1",
        "series across studies carry study attributes"
    );
    let series = archive
        .get_json("/series?SeriesNumber=2&PatientID=P2")
        .await?;
    assert_eq!(
        uids(&series, "0020000E"),
        ["2.25.42.1.3.2"].map(String::from).into()
    );
    let series = archive
        .get_json("/series?RequestAttributeSequence.ScheduledProcedureStepID=SPS-1")
        .await?;
    assert_eq!(
        uids(&series, "0020000E"),
        ["2.25.42.1.1.1"].map(String::from).into()
    );
    assert_eq!(
        series[0]["00400275"]["Value"][0]["00400009"]["Value"][0],
        "SPS-1"
    );
    let series = archive
        .get_json("/series?SeriesInstanceUID=2.25.42.1.1.2,2.25.42.1.2.1")
        .await?;
    assert_eq!(series.as_array().unwrap().len(), 2);

    // Instance level.
    let instances = archive
        .get_json("/studies/2.25.42.1.1/series/2.25.42.1.1.1/instances")
        .await?;
    assert_eq!(instances.as_array().unwrap().len(), 3);
    assert_eq!(instances[0]["00280010"]["Value"][0], 8, "Rows");
    let instances = archive
        .get_json("/studies/2.25.42.1.1/instances?InstanceNumber=2")
        .await?;
    assert_eq!(
        uids(&instances, "00080018"),
        ["2.25.42.1.1.1.2", "2.25.42.1.1.2.2"]
            .map(String::from)
            .into()
    );
    let instances = archive
        .get_json("/instances?SOPInstanceUID=2.25.42.1.3.2.1")
        .await?;
    assert_eq!(instances.as_array().unwrap().len(), 1);
    let instances = archive
        .get_json("/instances?SOPClassUID=1.2.840.10008.5.1.4.1.1.2&PatientID=P2")
        .await?;
    assert_eq!(instances.as_array().unwrap().len(), 2);

    // includefield: by keyword, by tag, and all.
    let studies_json = archive
        .get_json("/studies?PatientID=P2&includefield=PatientBirthDate,00081030")
        .await?;
    assert_eq!(studies_json[0]["00100030"]["Value"][0], "19700101");
    let studies_json = archive
        .get_json("/studies?PatientID=P2&includefield=SeriesDescription")
        .await?;
    assert_eq!(studies_json[0]["0008103E"]["Value"][0], "AXIAL");
    let studies_json = archive
        .get_json("/studies?PatientID=P2&includefield=all")
        .await?;
    assert_eq!(
        studies_json[0]["00280100"]["Value"][0], 16,
        "includefield=all returns stored attributes"
    );
    assert!(
        studies_json[0].get("7FE00010").is_none(),
        "bulk data is not returned by QIDO"
    );

    // Paging: stable order, no skips, no repeats; truncation is announced.
    let mut paged = Vec::new();
    for offset in 0..4 {
        let response = archive
            .get(&format!("/instances?limit=2&offset={}", offset * 2))
            .await?;
        let warning = response
            .headers()
            .get("warning")
            .map(|value| value.to_str().unwrap().to_owned());
        let page: serde_json::Value = response.json().await?;
        if offset < 3 {
            assert!(
                warning.as_deref().unwrap_or_default().contains("offset"),
                "page {offset} announces more"
            );
        }
        paged.extend(
            page.as_array()
                .unwrap()
                .iter()
                .map(|item| item["00080018"]["Value"][0].as_str().unwrap().to_owned()),
        );
    }
    let all = uids(&archive.get_json("/instances").await?, "00080018");
    assert_eq!(paged.len(), all.len(), "{paged:?}");
    assert_eq!(paged.iter().cloned().collect::<BTreeSet<_>>(), all);

    // Bad parameters: 400 naming the parameter, never a 500.
    for (query, parameter) in [
        ("/studies?offset=-5", "offset"),
        ("/studies?limit=abc", "limit"),
        ("/studies?StudyDate=2024-01-15", "StudyDate"),
        (
            "/studies?StudyInstanceUID=not%20a%20uid",
            "StudyInstanceUID",
        ),
        ("/studies?NoSuchAttribute=1", "NoSuchAttribute"),
        ("/studies?includefield=Nope", "includefield"),
    ] {
        let response = archive.get(query).await?;
        assert_eq!(response.status(), 400, "{query}");
        let problem: serde_json::Value = response.json().await?;
        assert!(
            problem["detail"].as_str().unwrap().contains(parameter),
            "{query}: {problem}"
        );
    }
    let response = archive.get("/studies?SOPInstanceUID=1.2.3").await?;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("warning").is_some(),
        "unsupported matching at study level is announced"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_wado_answers_errors_with_the_right_status() -> anyhow::Result<()> {
    let archive = TestArchive::start(Backend::SqliteLocal).await?;
    let instance = SyntheticInstance::ct(7, 1, 1, 1, 4, 4);
    let (status, _) = archive.stow("/studies", &[instance.to_part10()]).await?;
    assert_eq!(status, 200);
    let study = &instance.study_instance_uid;
    let series = &instance.series_instance_uid;
    for (path, expected) in [
        ("/studies/1.2.3.999".to_owned(), 404),
        ("/studies/abc%20def".to_owned(), 400),
        ("/studies/abc".to_owned(), 400),
        ("/studies/abc/metadata".to_owned(), 400),
        (format!("/studies/{study}/series/abc"), 400),
        (format!("/studies/{study}/series/1.2.3.999"), 404),
        (
            format!("/studies/{study}/series/{series}/instances/1.2.999"),
            404,
        ),
        (
            format!("/studies/{study}/series/{series}/instances/1.2.999/metadata"),
            404,
        ),
        ("/studies/1.2.3.999/metadata".to_owned(), 404),
    ] {
        let response = archive.get(&path).await?;
        assert_eq!(response.status().as_u16(), expected, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    // Not acceptable media types and transfer syntaxes.
    let status_for_accept = async |accept: &str| -> anyhow::Result<u16> {
        let response = archive
            .client
            .get(format!("{}/studies/{study}", archive.base_url))
            .header("accept", accept)
            .send()
            .await?;
        Ok(response.status().as_u16())
    };
    assert_eq!(status_for_accept("image/png").await?, 406);
    let dicom = "multipart/related; type=\"application/dicom\"";
    assert_eq!(
        status_for_accept(&format!("{dicom}; transfer-syntax=1.2.840.10008.1.2.4.50")).await?,
        406
    );
    assert_eq!(
        status_for_accept(&format!("{dicom}; transfer-syntax=*")).await?,
        200
    );
    // Metadata carries a BulkDataURI for the pixel data that points at this archive.
    let metadata = archive
        .get_json(&format!("/studies/{study}/metadata"))
        .await?;
    let uri = metadata[0]["7FE00010"]["BulkDataURI"].as_str().unwrap();
    assert!(
        uri.starts_with(&format!(
            "{}/studies/{study}/series/{series}/instances/",
            archive.base_url
        )),
        "{uri}"
    );
    assert_eq!(metadata[0]["00100020"]["Value"][0], instance.patient_id);
    // STOW errors: wrong content type, empty body, study mismatch.
    let response = archive
        .client
        .post(format!("{}/studies", archive.base_url))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await?;
    assert_eq!(response.status(), 415);
    let response = archive
        .client
        .post(format!("{}/studies", archive.base_url))
        .header(
            "content-type",
            "multipart/related; type=\"application/dicom\"; boundary=x",
        )
        .body("--x--\r\n")
        .send()
        .await?;
    assert_eq!(response.status(), 400);
    let other = SyntheticInstance::ct(7, 2, 1, 1, 4, 4);
    let (status, response) = archive
        .stow(&format!("/studies/{study}"), &[other.to_part10()])
        .await?;
    assert_eq!(status, 409, "{response}");
    assert_eq!(
        response["00081198"]["Value"][0]["00081197"]["Value"][0],
        0xA900
    );
    // A request mixing a good and a bad part stores the good one and reports both.
    let good = SyntheticInstance::ct(7, 1, 1, 2, 4, 4);
    let (status, response) = archive
        .stow(
            "/studies",
            &[good.to_part10(), b"not dicom at all".to_vec()],
        )
        .await?;
    assert_eq!(status, 202, "{response}");
    assert_eq!(response["00081199"]["Value"].as_array().unwrap().len(), 1);
    assert_eq!(
        response["00081198"]["Value"][0]["00081197"]["Value"][0],
        0xC000
    );
    assert_eq!(
        archive.store.list("").await?.len(),
        2,
        "one object per stored instance"
    );
    Ok(())
}
