//! Sampling a server's resident memory while a scenario runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Samples `VmRSS` of a process every 100 ms until stopped; keeps the peak and, for the
/// flatness check, every sample.
pub struct RssSampler {
    peak_kib: Arc<AtomicU64>,
    samples: Arc<std::sync::Mutex<Vec<(f64, u64)>>>,
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RssSampler {
    /// Starts sampling `pid`; with `None`, samples nothing.
    pub fn start(pid: Option<u32>) -> Self {
        let peak_kib = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = pid.map(|pid| {
            let (peak_kib, samples, stop) = (peak_kib.clone(), samples.clone(), stop.clone());
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if let Some(kib) = rss_kib(pid) {
                        peak_kib.fetch_max(kib, Ordering::Relaxed);
                        samples
                            .lock()
                            .expect("not poisoned")
                            .push((started.elapsed().as_secs_f64(), kib));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        });
        Self {
            peak_kib,
            samples,
            stop,
            task,
        }
    }

    /// Stops sampling and returns the peak in MiB and the samples `(seconds, KiB)`.
    pub async fn finish(mut self) -> (Option<f64>, Vec<(f64, u64)>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            let _ = task.await;
            let peak = self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0;
            let samples = std::mem::take(&mut *self.samples.lock().expect("not poisoned"));
            return (Some(peak), samples);
        }
        (None, Vec::new())
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}
