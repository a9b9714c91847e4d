//! The audit trail: one record per HTTP request and per DIMSE operation, saying who did what
//! to which resource, from where, and how it ended (docs/security.md).
//!
//! Every record is a log event on the `audit` target (so it reaches the log pipeline and
//! OpenTelemetry like any other event) and, once [`install_file`] was called, a JSON line
//! appended to that file by a writer thread (never blocking the caller on disk). Records
//! carry UIDs, paths, AE titles and token names only: never patient names, IDs or birth
//! dates, and never a query string (QIDO-RS and FHIR searches put patient data there).

use std::io::Write;
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Mutex, PoisonError};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};

/// Who made a request when nothing identified them (no authentication configured).
pub const ANONYMOUS: &str = "anonymous";

/// One audited operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// `http` or `dimse`.
    pub protocol: &'static str,
    /// The HTTP method, or the DIMSE operation (`C-STORE`, `C-FIND`, ...).
    pub action: String,
    /// The request path without its query string, or the DIMSE SOP Instance UID / query level.
    pub resource: String,
    /// The token name, the calling AE title, or [`ANONYMOUS`].
    pub principal: String,
    /// The peer's socket address.
    pub remote_addr: Option<String>,
    /// The HTTP status code, or the DIMSE status (`0x0000`) or failure.
    pub outcome: String,
    /// How long the operation took, in milliseconds.
    pub duration_ms: u64,
}

impl AuditRecord {
    /// The record as one JSON object, with the time it is written.
    pub fn to_json_line(&self) -> String {
        let mut time = String::new();
        let _ = SystemTime.format_time(&mut Writer::new(&mut time));
        serde_json::json!({
            "time": time,
            "protocol": self.protocol,
            "action": self.action,
            "resource": self.resource,
            "principal": self.principal,
            "remote_addr": self.remote_addr,
            "outcome": self.outcome,
            "duration_ms": self.duration_ms,
        })
        .to_string()
    }
}

static FILE_SINK: Mutex<Option<Sender<String>>> = Mutex::new(None);

/// Records `record`: a log event on the `audit` target, and a line in the audit file when
/// one is installed.
pub fn record(record: AuditRecord) {
    tracing::info!(
        target: "audit",
        protocol = record.protocol,
        action = %record.action,
        resource = %record.resource,
        principal = %record.principal,
        remote_addr = record.remote_addr.as_deref().unwrap_or(""),
        outcome = %record.outcome,
        duration_ms = record.duration_ms,
        "audit"
    );
    let sink = FILE_SINK.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(sender) = sink.as_ref() {
        let _ = sender.send(record.to_json_line());
    }
}

/// Appends every later record to `path` (created if missing, mode 0600 on Unix) as a JSON
/// line. Replaces an earlier file; the previous writer finishes what it was given.
pub fn install_file(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path)?;
    let (sender, receiver) = channel();
    std::thread::Builder::new()
        .name("strata-audit".to_owned())
        .spawn(move || write_lines(file, receiver))?;
    *FILE_SINK.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender);
    Ok(())
}

/// Writes lines as they come, flushing whenever the queue runs empty.
fn write_lines(file: std::fs::File, receiver: Receiver<String>) {
    let mut writer = std::io::BufWriter::new(file);
    while let Ok(line) = receiver.recv() {
        let mut written = writeln!(writer, "{line}");
        while let Ok(more) = receiver.try_recv() {
            written = written.and_then(|()| writeln!(writer, "{more}"));
        }
        if let Err(error) = written.and_then(|()| writer.flush()) {
            eprintln!("strata: failed to write the audit file: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_records_are_json_lines_in_the_installed_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit").join("audit.jsonl");
        install_file(&path).unwrap();
        record(AuditRecord {
            protocol: "http",
            action: "GET".to_owned(),
            resource: "/dicomweb/studies/1.2.3".to_owned(),
            principal: "viewer".to_owned(),
            remote_addr: Some("127.0.0.1:5000".to_owned()),
            outcome: "200".to_owned(),
            duration_ms: 3,
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let line = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if let Some(line) = text.lines().next() {
                break line.to_owned();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no audit line written"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["principal"], "viewer");
        assert_eq!(value["resource"], "/dicomweb/studies/1.2.3");
        assert_eq!(value["outcome"], "200");
        assert!(value["time"].as_str().unwrap().ends_with('Z'), "{value}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
