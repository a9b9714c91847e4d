//! What the machine allows, measured by the same tool: sequential disk write and read, and
//! loopback HTTP throughput for large bodies.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;

use crate::scenarios::BenchResult;

const CHUNK: usize = 1 << 20;

/// Runs the three measurements.
pub async fn measure(dir: &Path, num_bytes: u64) -> anyhow::Result<Vec<BenchResult>> {
    let path = dir.join(format!("strata-bench-limits-{}.bin", std::process::id()));
    let (write_mb_s, read_mb_s) = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || disk(&path, num_bytes)).await??
    };
    let _ = std::fs::remove_file(&path);
    let http_mb_s = loopback_http(num_bytes).await?;
    let result = |scenario: &str, mb_per_s: f64| BenchResult {
        target: "machine".to_owned(),
        scenario: scenario.to_owned(),
        params: BTreeMap::from([("bytes".to_owned(), num_bytes.into())]),
        metrics: BTreeMap::from([("mb_per_s".to_owned(), mb_per_s)]),
        error: None,
    };
    Ok(vec![
        result("disk-write", write_mb_s),
        result("disk-read", read_mb_s),
        result("loopback-http", http_mb_s),
    ])
}

/// Writes `num_bytes` with fsync at the end, then reads them back (from the page cache when
/// the file fits in memory, as an archive's hot objects do).
fn disk(path: &Path, num_bytes: u64) -> anyhow::Result<(f64, f64)> {
    let chunk: Vec<u8> = (0..CHUNK).map(|index| (index * 31 % 251) as u8).collect();
    let started = Instant::now();
    let mut file = std::fs::File::create(path)?;
    let mut written = 0u64;
    while written < num_bytes {
        file.write_all(&chunk)?;
        written += CHUNK as u64;
    }
    file.sync_all()?;
    let write_mb_s = written as f64 / 1e6 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut file = std::fs::File::open(path)?;
    let mut buffer = vec![0u8; CHUNK];
    let mut read = 0u64;
    loop {
        let count = file.read(&mut buffer)?;
        if count == 0 {
            break;
        }
        read += count as u64;
    }
    let read_mb_s = read as f64 / 1e6 / started.elapsed().as_secs_f64();
    Ok((write_mb_s, read_mb_s))
}

/// Serves `num_bytes` from an in-process HTTP server on loopback and downloads them.
async fn loopback_http(num_bytes: u64) -> anyhow::Result<f64> {
    let chunk = Bytes::from(vec![7u8; CHUNK]);
    let app = axum::Router::new().route(
        "/body",
        axum::routing::get(move || {
            let chunk = chunk.clone();
            async move {
                let num_chunks = num_bytes.div_ceil(CHUNK as u64);
                let stream = futures::stream::iter(
                    (0..num_chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
                );
                axum::body::Body::from_stream(stream)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let started = Instant::now();
    let response = reqwest::get(format!("http://{addr}/body")).await?;
    let mut received = 0u64;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        received += chunk?.len() as u64;
    }
    let mb_s = received as f64 / 1e6 / started.elapsed().as_secs_f64();
    server.abort();
    Ok(mb_s)
}
