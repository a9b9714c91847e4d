//! `strata-bench search-scale` (issue 5): the full-text search index at archive scale.
//!
//! ```sh
//! cargo run --release -p strata-benches -- search-scale --studies 100000
//! ```
//!
//! Generates synthetic studies (seeded: names, descriptions, report sentences, modalities,
//! dates, sources, institutions) as DICOM JSON, indexes them on disk through the same document
//! builder as the indexer (the catalog is left out: its read cost is measured by
//! `catalog-scale`), and measures indexing throughput, index size, and the latency of word,
//! phrase, fuzzy-name and filtered queries (each a full page: top 20, snippets, facets,
//! summaries). Figures are recorded in docs/search.md.

use std::time::{Duration, Instant};

use strata_search::{DocumentSettings, SearchIndex, SearchRequest};

const FAMILY_NAMES: &[&str] = &[
    "Müller",
    "Schmidt",
    "Dupont",
    "Martin",
    "García",
    "Rossi",
    "Nowak",
    "Kowalski",
    "Smith",
    "Johnson",
    "Nguyễn",
    "Tanaka",
    "Yılmaz",
    "Jansen",
    "Andersson",
    "Novák",
    "Ivanova",
    "Silva",
    "O'Brien",
    "Fischer",
    "Lefèvre",
    "Moreau",
    "Bianchi",
    "Horváth",
    "Popescu",
    "Papadopoulos",
    "Hansen",
    "Virtanen",
    "Kim",
    "Chen",
];
const GIVEN_NAMES: &[&str] = &[
    "Anna", "Jürgen", "Hélène", "John", "María", "Luca", "Piotr", "Seán", "Thị", "Yuki", "Emre",
    "Sanne", "Erik", "Jana", "Olga", "João", "Klaus", "Marc", "Giulia", "Zoltán",
];
const DESCRIPTIONS: &[&str] = &[
    "CT THORAX",
    "CT ABDOMEN PELVIS",
    "MR KNEE LEFT",
    "MR BRAIN",
    "CHEST PA",
    "US THYROID",
    "PET CT WHOLE BODY",
    "Mammographie de dépistage",
    "CT HEAD WITHOUT CONTRAST",
    "MR LUMBAR SPINE",
];
const MODALITIES: &[&str] = &["CT", "MR", "CR", "US", "PT", "MG", "DX", "NM"];
const FINDINGS: &[&str] = &[
    "small nodule in the right upper lobe",
    "no acute cardiopulmonary abnormality",
    "hepatic steatosis without focal lesion",
    "tear of the medial meniscus",
    "multiple periventricular white matter lesions",
    "thyroid nodule in the left lobe",
    "FDG avid lesion in the right lung",
    "no suspicious calcifications",
    "degenerative disc disease at L4-L5",
    "pleural effusion on the left side",
    "fracture of the distal radius",
    "normal study",
];
const SOURCES: &[&str] = &["HOSP-A", "HOSP-B", "HOSP-C", "CLINIC-D", "IMAGING-E"];
const INSTITUTIONS: &[&str] = &[
    "Klinikum Nord",
    "Saint Mary Hospital",
    "Hôpital Nord",
    "University Medical Center",
    "Ospedale San Carlo",
];

/// SplitMix64: a seeded generator, so every run indexes the same studies.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^ (mixed >> 31)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

fn study_json(random: &mut Random, number: u64) -> String {
    let text = |vr: &str, value: &str| serde_json::json!({"vr": vr, "Value": [value]});
    let name =
        |random: &mut Random| format!("{}^{}", random.pick(FAMILY_NAMES), random.pick(GIVEN_NAMES));
    let patient_name = format!("{}{}", name(random), number % 1000);
    let referring = name(random);
    let date = format!(
        "{}{:02}{:02}",
        2015 + random.next() % 11,
        1 + random.next() % 12,
        1 + random.next() % 28
    );
    let findings = format!("{}; {}", random.pick(FINDINGS), random.pick(FINDINGS));
    serde_json::json!({
        "00080020": text("DA", &date),
        "00080050": text("SH", &format!("ACC{number:08}")),
        "00080060": text("CS", random.pick(MODALITIES)),
        "00080080": text("LO", random.pick(INSTITUTIONS)),
        "00080090": {"vr": "PN", "Value": [{"Alphabetic": referring}]},
        "00081030": text("LO", random.pick(DESCRIPTIONS)),
        "0008103E": text("LO", "AXIAL 1.25 MM"),
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": patient_name}]},
        "00100020": text("LO", &format!("PID{number:08}")),
        "00100021": text("LO", random.pick(SOURCES)),
        "0020000E": text("UI", &format!("2.25.99.{number}.1")),
        "0040A730": {"vr": "SQ", "Value": [{
            "0040A160": text("UT", &findings),
            "0040A043": {"vr": "SQ", "Value": [{"00080104": text("LO", "Finding")}]},
        }]},
    })
    .to_string()
}

/// Makes the next request of one query kind.
type RequestMaker = Box<dyn Fn(&mut Random) -> SearchRequest>;

fn percentile(latencies: &mut [Duration], fraction: f64) -> f64 {
    latencies.sort();
    let position = ((latencies.len() as f64 - 1.0) * fraction).round() as usize;
    latencies[position].as_secs_f64() * 1000.0
}

fn directory_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .expect("index directory")
        .filter_map(Result::ok)
        .filter_map(|entry| entry.metadata().ok())
        .filter(|metadata| metadata.is_file())
        .map(|metadata| metadata.len())
        .sum()
}

/// `strata-bench search-scale`.
#[derive(Debug, clap::Args)]
pub struct SearchScaleArgs {
    /// Synthetic studies to index.
    #[arg(long, default_value_t = 100_000)]
    studies: u64,
    /// Queries per kind (after 10 warm-ups).
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Directory for the index (a fresh temporary directory by default).
    #[arg(long)]
    index_dir: Option<std::path::PathBuf>,
}

/// Indexes `studies` synthetic studies and measures indexing throughput, index size and the
/// latency of word, phrase, fuzzy-name and filtered queries; prints a Markdown table.
pub fn run(args: SearchScaleArgs) -> anyhow::Result<()> {
    let num_studies = args.studies;
    let temporary = tempfile::tempdir()?;
    let directory = args
        .index_dir
        .unwrap_or_else(|| temporary.path().to_owned());
    std::fs::create_dir_all(&directory)?;
    let index = SearchIndex::open(&directory, DocumentSettings::default())?;
    let mut random = Random(42);
    let started = Instant::now();
    for number in 0..num_studies {
        let json = study_json(&mut random, number);
        index.stage_study(&format!("2.25.99.{number}"), &[json])?;
        if (number + 1) % 20_000 == 0 {
            index.commit(number as i64 + 1)?;
        }
    }
    index.commit(num_studies as i64)?;
    let indexing = started.elapsed();
    anyhow::ensure!(
        index.num_studies() == num_studies,
        "the index holds {} studies, not {num_studies}",
        index.num_studies()
    );
    let index_bytes = directory_size(&directory);

    let queries: Vec<(&str, RequestMaker)> = vec![
        (
            "word",
            Box::new(|random: &mut Random| SearchRequest {
                query: random
                    .pick(&["nodule", "effusion", "fracture", "steatosis", "meniscus"])
                    .to_owned(),
                ..SearchRequest::default()
            }),
        ),
        (
            "phrase",
            Box::new(|random: &mut Random| SearchRequest {
                query: random
                    .pick(&[
                        "\"right upper lobe\"",
                        "\"white matter lesions\"",
                        "\"distal radius\"",
                    ])
                    .to_owned(),
                ..SearchRequest::default()
            }),
        ),
        (
            "fuzzy name",
            Box::new(|random: &mut Random| SearchRequest {
                query: random
                    .pick(&["Kowlaski", "Mueller", "Lefevre", "Papadopulos", "Virtanan"])
                    .to_owned(),
                ..SearchRequest::default()
            }),
        ),
        (
            "filtered",
            Box::new(|random: &mut Random| SearchRequest {
                query: random.pick(&["nodule", "lesion", "normal"]).to_owned(),
                modalities: vec![random.pick(MODALITIES).to_owned()],
                sources: vec![random.pick(SOURCES).to_owned()],
                date_from: Some(20200101),
                date_to: Some(20231231),
                ..SearchRequest::default()
            }),
        ),
    ];
    let mut report = format!(
        "| measure | {num_studies} studies |\n|---|---|\n\
         | indexing throughput | {:.0} studies/s ({:.1} s) |\n\
         | index size on disk | {:.1} MiB ({:.0} bytes/study) |\n",
        num_studies as f64 / indexing.as_secs_f64(),
        indexing.as_secs_f64(),
        index_bytes as f64 / (1 << 20) as f64,
        index_bytes as f64 / num_studies as f64
    );
    for (label, make_request) in &queries {
        for _ in 0..10 {
            index.search(&make_request(&mut random))?;
        }
        let mut latencies = Vec::new();
        let mut total_hits = 0u64;
        for _ in 0..args.queries {
            let request = make_request(&mut random);
            let started = Instant::now();
            let response = index.search(&request)?;
            latencies.push(started.elapsed());
            total_hits += response.total;
        }
        let p50 = percentile(&mut latencies, 0.50);
        let p95 = percentile(&mut latencies, 0.95);
        report.push_str(&format!(
            "| {label} query (mean {} matches) | p50 {p50:.2} ms, p95 {p95:.2} ms |\n",
            total_hits / args.queries.max(1) as u64
        ));
    }
    std::io::Write::write_all(&mut std::io::stdout(), report.as_bytes())?;
    Ok(())
}
