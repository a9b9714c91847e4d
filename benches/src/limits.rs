//! What the machine allows, measured by the same tool: sequential disk write and read,
//! loopback HTTP throughput for large bodies, and two per-request floors that latency and
//! ingest targets are read against: a frame-sized response from an HTTP server that does no
//! work at all, and one 512 KiB object made durable (file fsync, hard link, directory fsync:
//! what any archive that answers only after the object is on disk must do per object); and a
//! retrieval floor: those objects sent as one multipart body by a server that only reads files.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;

use crate::scenarios::BenchResult;

const CHUNK: usize = 1 << 20;

/// The body of the floor frame response: one 512 x 512 frame of 16-bit pixels.
const FRAME_BYTES: usize = 512 * 512 * 2;

/// The size of the objects of the durable-object floor (a 512 x 512 CT instance).
const OBJECT_BYTES: usize = 512 * 1024;

/// Runs the measurements; `repeat` requests or objects for the two floors.
pub async fn measure(dir: &Path, num_bytes: u64, repeat: u32) -> anyhow::Result<Vec<BenchResult>> {
    let path = dir.join(format!("strata-bench-limits-{}.bin", std::process::id()));
    let (write_mb_s, read_mb_s) = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || disk(&path, num_bytes)).await??
    };
    let _ = std::fs::remove_file(&path);
    let http_mb_s = loopback_http(num_bytes).await?;
    let frame = loopback_frame(repeat).await?;
    let objects_dir = dir.join(format!("strata-bench-objects-{}", std::process::id()));
    let durable = {
        let objects_dir = objects_dir.clone();
        tokio::task::spawn_blocking(move || durable_objects(&objects_dir, repeat)).await?
    };
    // The objects just written are the files of the retrieval floor.
    let files = match &durable {
        Ok(_) => loopback_files(&objects_dir.join("objects")).await,
        Err(_) => Err(anyhow::anyhow!("no objects to serve")),
    };
    let _ = std::fs::remove_dir_all(&objects_dir);
    let durable = durable?;
    let files_mb_s = files?;
    let result = |scenario: &str, metrics: BTreeMap<String, f64>, param: (&str, u64)| BenchResult {
        target: "machine".to_owned(),
        scenario: scenario.to_owned(),
        params: BTreeMap::from([(param.0.to_owned(), param.1.into())]),
        metrics,
        error: None,
    };
    let throughput = |mb_per_s: f64| BTreeMap::from([("mb_per_s".to_owned(), mb_per_s)]);
    Ok(vec![
        result("disk-write", throughput(write_mb_s), ("bytes", num_bytes)),
        result("disk-read", throughput(read_mb_s), ("bytes", num_bytes)),
        result("loopback-http", throughput(http_mb_s), ("bytes", num_bytes)),
        result("loopback-frame", frame, ("requests", u64::from(repeat))),
        result("durable-object", durable, ("objects", u64::from(repeat))),
        result(
            "loopback-files",
            throughput(files_mb_s),
            ("objects", u64::from(repeat)),
        ),
    ])
}

/// The latency floor of a frame request: `repeat` GETs of a 512 x 512 x 16-bit frame, as a
/// one-part multipart body, from an HTTP server in another process that holds it in memory
/// (no catalog, no file; `TCP_NODELAY` like Strata's listener; [`serve_frame_floor`]),
/// through the client the scenarios use. No archive answers the `frame` scenario faster on
/// this machine.
async fn loopback_frame(repeat: u32) -> anyhow::Result<BTreeMap<String, f64>> {
    let (mut server, addr) = spawn_floor_server(&["serve-frame-floor"]).await?;
    let url = format!("http://{addr}/frames/1");
    // The client runs on one thread, as in the `frame` scenario.
    let latencies = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<f64>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let client = crate::scenarios::http_client()?;
            let accept = "multipart/related; type=\"application/octet-stream\"";
            // Warm the connection and the server's buffers like the scenario's first requests.
            for _ in 0..repeat.min(20) {
                crate::scenarios::timed_get(&client, &url, accept).await?;
            }
            let mut latencies = Vec::with_capacity(repeat as usize);
            for _ in 0..repeat {
                latencies.push(crate::scenarios::timed_get(&client, &url, accept).await?.0);
            }
            Ok(latencies)
        })
    })
    .await??;
    server.kill().await?;
    let mut latencies = latencies;
    latencies.sort_by(f64::total_cmp);
    Ok(BTreeMap::from([
        (
            "p50_ms".to_owned(),
            crate::scenarios::percentile(&latencies, 0.5),
        ),
        (
            "p95_ms".to_owned(),
            crate::scenarios::percentile(&latencies, 0.95),
        ),
    ]))
}

/// The server of the frame floor: answers every GET with the same in-memory frame response
/// and prints its address on the first line of stdout. Runs until killed.
pub async fn serve_frame_floor() -> anyhow::Result<()> {
    let boundary = "strata-bench-floor";
    let body = Bytes::from(
        [
            format!("--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n").into_bytes(),
            vec![7u8; FRAME_BYTES],
            format!("\r\n--{boundary}--\r\n").into_bytes(),
        ]
        .concat(),
    );
    let content_type =
        format!("multipart/related; type=\"application/octet-stream\"; boundary={boundary}");
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        let content_type = content_type.clone();
        async move { ([(axum::http::header::CONTENT_TYPE, content_type)], body) }
    });
    serve_floor(app).await
}

/// The floor of durable ingest on one stream: `count` objects of 512 KiB, each written to a
/// spool file, fsynced, hard-linked under its name and made durable with a directory fsync
/// (Strata's local store does exactly this per object; its catalog commit comes on top).
fn durable_objects(dir: &Path, count: u32) -> anyhow::Result<BTreeMap<String, f64>> {
    let spool = dir.join("spool");
    let objects = dir.join("objects");
    std::fs::create_dir_all(&spool)?;
    std::fs::create_dir_all(&objects)?;
    let content: Vec<u8> = (0..OBJECT_BYTES).map(|index| (index % 253) as u8).collect();
    let mut latencies = Vec::with_capacity(count as usize);
    let started = Instant::now();
    for index in 0..count {
        let object_started = Instant::now();
        let spool_path = spool.join(format!("{index}.tmp"));
        let mut file = std::fs::File::create(&spool_path)?;
        file.write_all(&content)?;
        file.sync_all()?;
        std::fs::hard_link(&spool_path, objects.join(format!("{index}.dcm")))?;
        std::fs::File::open(&objects)?.sync_all()?;
        std::fs::remove_file(&spool_path)?;
        latencies.push(object_started.elapsed().as_secs_f64() * 1000.0);
    }
    let objects_per_s = f64::from(count) / started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Ok(BTreeMap::from([
        (
            "p50_ms".to_owned(),
            crate::scenarios::percentile(&latencies, 0.5),
        ),
        ("objects_per_s".to_owned(), objects_per_s),
    ]))
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

/// The retrieval floor: the MB/s at which a server in another process that does nothing but
/// read the files of `dir` (whole, four ahead of the one being sent, on blocking threads, as
/// Strata reads local objects) sends them as one multipart body, through the client of the
/// `retrieve` scenario. Median of three requests.
async fn loopback_files(dir: &Path) -> anyhow::Result<f64> {
    let (mut server, addr) =
        spawn_floor_server(&["serve-files-floor", &dir.to_string_lossy()]).await?;
    let url = format!("http://{addr}/study");
    let mut rates = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<f64>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let client = crate::scenarios::http_client()?;
            let mut rates = Vec::new();
            for _ in 0..3 {
                let started = Instant::now();
                let response = client.get(&url).send().await?.error_for_status()?;
                let mut received = 0u64;
                let mut stream = response.bytes_stream();
                while let Some(chunk) = stream.next().await {
                    received += chunk?.len() as u64;
                }
                rates.push(received as f64 / 1e6 / started.elapsed().as_secs_f64());
            }
            Ok(rates)
        })
    })
    .await??;
    server.kill().await?;
    rates.sort_by(f64::total_cmp);
    Ok(rates[rates.len() / 2])
}

/// Starts `strata-bench ARGS` (a floor server) and returns it with the address it printed.
async fn spawn_floor_server(args: &[&str]) -> anyhow::Result<(tokio::process::Child, String)> {
    use tokio::io::AsyncBufReadExt;
    let mut server = tokio::process::Command::new(std::env::current_exe()?)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = server
        .stdout
        .take()
        .context("the floor server has no stdout")?;
    let addr = tokio::io::BufReader::new(stdout)
        .lines()
        .next_line()
        .await?
        .context("the floor server exited before printing its address")?;
    Ok((server, addr))
}

/// The server of the retrieval floor: answers every GET with the files of `dir` (sorted by
/// name) as one `multipart/related` body, and prints its address on the first line of
/// stdout. Runs until killed.
pub async fn serve_files_floor(dir: &Path) -> anyhow::Result<()> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    let files = std::sync::Arc::new(files);
    let boundary = "strata-bench-files";
    let app = axum::Router::new().fallback(move || {
        let files = files.clone();
        async move {
            let parts = futures::stream::iter(0..files.len())
                .map(move |index| {
                    let path = files[index].clone();
                    async move {
                        tokio::task::spawn_blocking(move || -> std::io::Result<Bytes> {
                            let mut file = std::fs::File::open(&path)?;
                            let length = file.metadata()?.len();
                            // `read_to_end` fills spare capacity without zeroing it first.
                            let mut buffer = Vec::with_capacity(length as usize);
                            file.read_to_end(&mut buffer)?;
                            Ok(Bytes::from(buffer))
                        })
                        .await
                        .map_err(std::io::Error::other)?
                    }
                })
                .buffered(4)
                .flat_map(move |read| {
                    let head = Bytes::from(format!(
                        "\r\n--{boundary}\r\nContent-Type: application/dicom\r\n\r\n"
                    ));
                    futures::stream::iter(match read {
                        Ok(content) => vec![Ok(head), Ok(content)],
                        Err(error) => vec![Err(error)],
                    })
                });
            let tail = futures::stream::once(async move {
                Ok::<_, std::io::Error>(Bytes::from(format!("\r\n--{boundary}--\r\n")))
            });
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
                )],
                axum::body::Body::from_stream(parts.chain(tail)),
            )
        }
    });
    serve_floor(app).await
}

/// Serves `app` on a free loopback port with `TCP_NODELAY` (like Strata's listener), after
/// printing the address on the first line of stdout for [`spawn_floor_server`].
async fn serve_floor(app: axum::Router) -> anyhow::Result<()> {
    use axum::serve::ListenerExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}
