//! HTTPS: the HTTP listener behind rustls when `http.tls_cert_file` and `http.tls_key_file`
//! are set (docs/security.md).
//!
//! Handshakes run in tasks of their own, with a deadline, so a slow or silent client never
//! holds up the others; finished ones are handed to axum's server through a channel, which
//! keeps axum's graceful shutdown as it is for plain HTTP.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// How long a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the certificate chain and key (PEM) into a server configuration: TLS 1.2 and 1.3
/// with rustls' safe defaults (aws-lc-rs), HTTP/1.1 by ALPN.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut config = identity_config("http", cert_file, key_file, None)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The DICOM TLS configuration of the DIMSE listener (PS3.15 Annex B; rustls' defaults meet
/// the BCP 195 profile's TLS 1.2+ with forward-secret AEAD suites). With `client_ca_file`,
/// peers must present a certificate signed by one of its authorities.
pub fn dimse_server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    Ok(Arc::new(identity_config(
        "dimse",
        cert_file,
        key_file,
        client_ca_file,
    )?))
}

/// The DICOM TLS client configuration for C-MOVE destinations: the authorities of `ca_file`
/// and, when given, this node's certificate and key for mutual TLS.
pub fn dimse_client_config(
    ca_file: &Path,
    identity: Option<(&Path, &Path)>,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs("dimse", "tls_peer_ca_file", ca_file)? {
        roots.add(cert).with_context(|| {
            format!(
                "dimse.tls_peer_ca_file `{}` holds an unusable certificate",
                ca_file.display()
            )
        })?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("no TLS protocol version available")?
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert_file, key_file)) => {
            let certs = read_certs("dimse", "tls_cert_file", cert_file)?;
            let key = PrivateKeyDer::from_pem_file(key_file)
                .map_err(|error| anyhow::anyhow!("{error:?}"))
                .with_context(|| {
                    format!("failed to read dimse.tls_key_file `{}`", key_file.display())
                })?;
            builder.with_client_auth_cert(certs, key).context(
                "dimse.tls_cert_file and dimse.tls_key_file do not make a usable TLS identity",
            )?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn read_certs(
    section: &str,
    key: &str,
    file: &Path,
) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| anyhow::anyhow!("{error:?}"))
        .with_context(|| format!("failed to read {section}.{key} `{}`", file.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "{section}.{key} `{}` holds no PEM certificate",
            file.display()
        );
    }
    Ok(certs)
}

fn identity_config(
    section: &str,
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
) -> anyhow::Result<rustls::ServerConfig> {
    let certs = read_certs(section, "tls_cert_file", cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|error| anyhow::anyhow!("{error:?}"))
        .with_context(|| {
            format!(
                "failed to read {section}.tls_key_file `{}`",
                key_file.display()
            )
        })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("no TLS protocol version available")?;
    let builder = match client_ca_file {
        Some(client_ca_file) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(section, "tls_client_ca_file", client_ca_file)? {
                roots.add(cert).with_context(|| {
                    format!(
                        "{section}.tls_client_ca_file `{}` holds an unusable certificate",
                        client_ca_file.display()
                    )
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .context("failed to set up client certificate verification")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder.with_single_cert(certs, key).with_context(|| {
        format!(
            "{section}.tls_cert_file and {section}.tls_key_file do not make a usable TLS identity"
        )
    })
}

/// A listener that yields connections once their TLS handshake is done.
pub struct TlsListener {
    handshaken: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    /// Accepts on `listener` and runs handshakes with `config` until `shutdown`.
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (sender, handshaken) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = shutdown.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let (stream, remote_addr) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off, as axum does.
                        debug!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if let Err(error) = stream.set_nodelay(true) {
                    debug!(%error, "failed to set TCP_NODELAY");
                }
                let (acceptor, sender) = (acceptor.clone(), sender.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let _ = sender.send((tls_stream, remote_addr)).await;
                        }
                        Ok(Err(error)) => debug!(%error, %remote_addr, "TLS handshake failed"),
                        Err(_) => debug!(%remote_addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            handshaken,
            local_addr,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(connection) => connection,
            // The accept loop stopped (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
