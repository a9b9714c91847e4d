//! Starting and stopping the real `strata` binary.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `strata serve` process.
pub struct StrataProcess {
    pub child: Child,
    pub base_url: String,
    pub pid: u32,
}

impl StrataProcess {
    /// Starts `strata serve` on `data_dir` with a free port, waiting for "node ready".
    pub fn start(data_dir: &Path, extra_env: &[(String, String)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
        command
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--http-addr", "127.0.0.1:0"])
            .env("STRATA__DIMSE__ADDR", "127.0.0.1:0")
            .env("STRATA_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in extra_env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("strata starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(addr) = line.split("http_addr=").nth(1) {
                    let addr = addr
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = sender.send(addr);
                    sent = true;
                }
            }
        });
        let addr = receiver
            .recv_timeout(Duration::from_secs(60))
            .expect("strata logs node ready within 60 s");
        let pid = child.id();
        Self {
            child,
            base_url: format!("http://{addr}/dicomweb"),
            pid,
        }
    }

    /// Kills the process with SIGKILL (no chance to clean up).
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL delivered");
        self.child.wait().expect("reaped");
    }

    /// The peak resident set size of the process so far, in bytes (VmHWM).
    pub fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).expect("procfs");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| {
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
            .expect("VmHWM present")
    }
}

impl Drop for StrataProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `condition` holds, polling.
pub async fn wait_until(timeout: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A STOW-RS request body generated on the fly: parts are produced as the request is sent,
/// so the client never holds the whole study.
pub fn streaming_stow_body(
    parts: impl Iterator<Item = Vec<u8>> + Send + 'static,
    delay_per_part: Duration,
) -> (String, reqwest::Body) {
    let boundary = "strata-blackbox-boundary".to_owned();
    let part_boundary = boundary.clone();
    use futures::StreamExt;
    let parts = futures::stream::iter(parts).then(move |object| {
        let boundary = part_boundary.clone();
        async move {
            if !delay_per_part.is_zero() {
                tokio::time::sleep(delay_per_part).await;
            }
            let mut chunk =
                format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").into_bytes();
            chunk.extend_from_slice(&object);
            chunk.extend_from_slice(b"\r\n");
            Ok::<bytes::Bytes, std::io::Error>(bytes::Bytes::from(chunk))
        }
    });
    let closing =
        futures::stream::once(async move { Ok(bytes::Bytes::from(format!("--{boundary}--\r\n"))) });
    (
        "multipart/related; type=\"application/dicom\"; boundary=strata-blackbox-boundary"
            .to_owned(),
        reqwest::Body::wrap_stream(parts.chain(closing)),
    )
}
