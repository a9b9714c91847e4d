//! The DIMSE listener: accepts TCP connections, applies the association policy and runs one
//! association per tokio task, its blocking protocol work on the blocking pool.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use dicom_dictionary_std::uids;
use dicom_ul::ServerAssociationOptions;
use dicom_ul::association::server::{AccessControl, Negotiation};
use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJServiceUserReason, AssociationRJSource, Pdu, RequestorRoles, UserIdentity,
};
use strata_catalog::Catalog;
use strata_ingest::IngestPipeline;
use strata_storage::BlobStore;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn};

use crate::scp::serve_association;
use crate::storage_sop_classes::STORAGE_SOP_CLASSES;
use crate::transfer_syntaxes::STORAGE_TRANSFER_SYNTAXES;
use crate::transport::Link;

/// The policy and identity of the DIMSE listener.
#[derive(Debug, Clone)]
pub struct DimseSettings {
    /// This node's AE title.
    pub ae_title: String,
    /// Calling AE titles allowed to associate; empty means any.
    pub accepted_calling_ae_titles: Vec<String>,
    /// The largest PDU this node receives.
    pub max_pdu: u32,
    /// Associations served at the same time.
    pub max_associations: usize,
    /// How long a new connection may take to send its A-ASSOCIATE-RQ.
    pub artim_timeout: Duration,
    /// How long an association may stay silent.
    pub idle_timeout: Duration,
    /// Known C-MOVE destinations: AE title → `HOST:PORT`.
    pub peers: BTreeMap<String, String>,
    /// Accepts C-STORE requests (the ingest role). Without it, storage contexts are still
    /// negotiated (C-GET sends over them) but a C-STORE is refused with 0122.
    pub serve_storage: bool,
    /// Offers the Query/Retrieve models: C-FIND, C-MOVE, C-GET (the gateway role).
    pub serve_query_retrieve: bool,
    /// On shutdown, how long in-flight associations may take to finish.
    pub drain_timeout: Duration,
    /// DICOM TLS (PS3.15 Annex B): when set, every connection must complete a TLS handshake
    /// with this configuration before its association request.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// C-MOVE destinations (AE titles of `peers`, any case) reached over DICOM TLS, with
    /// `peer_tls`.
    pub tls_peers: Vec<String>,
    /// The TLS client configuration for `tls_peers`: trusted authorities and, for mutual TLS,
    /// this node's certificate.
    pub peer_tls: Option<Arc<rustls::ClientConfig>>,
}

/// The services an association uses.
#[derive(Clone)]
pub struct DimseServices {
    pub catalog: Arc<dyn Catalog>,
    pub store: Arc<dyn BlobStore>,
    pub pipeline: IngestPipeline,
}

pub(crate) struct AssociationContext {
    pub(crate) settings: Arc<DimseSettings>,
    pub(crate) services: DimseServices,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) peer_addr: SocketAddr,
    pub(crate) calling_ae_title: String,
}

/// Serves DIMSE on `listener` until `shutdown` is cancelled. See PS3.8 §9 (association
/// establishment) and PS3.7 §9 (DIMSE-C services).
pub async fn serve_dimse(
    listener: tokio::net::TcpListener,
    settings: DimseSettings,
    services: DimseServices,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let settings = Arc::new(settings);
    let slots = Arc::new(Semaphore::new(settings.max_associations));
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let (socket, peer_addr) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "failed to accept a DIMSE connection");
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        let socket = match socket.into_std() {
            Ok(socket) => socket,
            Err(error) => {
                warn!(%error, "failed to take the DIMSE socket");
                continue;
            }
        };
        let slot = slots.clone().try_acquire_owned().ok();
        let settings = settings.clone();
        let services = services.clone();
        let runtime = tokio::runtime::Handle::current();
        tasks.spawn(async move {
            let joined = tokio::task::spawn_blocking(move || {
                let Some(_slot) = slot else {
                    refuse_busy(socket, &settings);
                    return;
                };
                run_association(socket, peer_addr, settings, services, runtime);
            })
            .await;
            if let Err(error) = joined {
                warn!(%error, "association task failed");
            }
        });
    }
    tasks.close();
    if tokio::time::timeout(settings.drain_timeout, tasks.wait())
        .await
        .is_err()
    {
        warn!(
            drain_timeout_seconds = settings.drain_timeout.as_secs(),
            "DIMSE associations did not finish within the drain timeout"
        );
    }
    Ok(())
}

/// Answers an A-ASSOCIATE-RQ with a transient rejection: local limit exceeded.
fn refuse_busy(mut socket: std::net::TcpStream, settings: &DimseSettings) {
    use std::io::Write;
    let _ = socket.set_blocking_mode();
    let _ = socket.set_read_timeout(Some(settings.artim_timeout));
    let mut buffer = bytes::BytesMut::new();
    if dicom_ul::association::read_pdu_from_wire(&mut socket, &mut buffer, settings.max_pdu, false)
        .is_ok()
    {
        let mut out = Vec::new();
        let rejection = Pdu::AssociationRJ(AssociationRJ {
            result: AssociationRJResult::Transient,
            source: AssociationRJSource::ServiceProviderPresentation(
                AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
            ),
        });
        if dicom_ul::write_pdu(&mut out, &rejection).is_ok() {
            let _ = socket.write_all(&out);
        }
    }
    warn!(
        max_associations = settings.max_associations,
        "association refused: too many associations"
    );
}

trait BlockingMode {
    fn set_blocking_mode(&self) -> std::io::Result<()>;
}

impl BlockingMode for std::net::TcpStream {
    fn set_blocking_mode(&self) -> std::io::Result<()> {
        // tokio sockets are non-blocking; the association runs on blocking I/O.
        self.set_nonblocking(false)
    }
}

struct CallingAeTitles(Vec<String>);

impl AccessControl for CallingAeTitles {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if called_ae_title.trim() != this_ae_title.trim() {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if !self.0.is_empty() && !self.0.iter().any(|title| title == calling_ae_title.trim()) {
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

/// Accepts the roles a C-GET requester asks for on storage SOP classes (it must be the
/// storage SCP to receive the instances).
struct StorageRoles;

impl Negotiation for StorageRoles {
    fn negotiate_roles(
        &self,
        sop_class_uid: &str,
        scu_role: bool,
        scp_role: bool,
    ) -> Option<RequestorRoles> {
        let sop_class_uid = sop_class_uid.trim_end_matches(['\0', ' ']);
        STORAGE_SOP_CLASSES
            .contains(&sop_class_uid)
            .then_some(RequestorRoles {
                scu: scu_role,
                scp: scp_role,
            })
    }
}

/// The Query/Retrieve abstract syntaxes (the gateway role).
const QUERY_RETRIEVE_SOP_CLASSES: &[&str] = &[
    uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND,
    uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND,
    uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_MOVE,
    uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_MOVE,
    uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_GET,
    uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_GET,
];

fn run_association(
    socket: TcpStream,
    peer_addr: SocketAddr,
    settings: Arc<DimseSettings>,
    services: DimseServices,
    runtime: tokio::runtime::Handle,
) {
    let span = info_span!(
        "dimse_association",
        peer = %peer_addr,
        calling_ae_title = tracing::field::Empty
    );
    let _entered = span.enter();
    let _association_metrics = strata_telemetry::metrics::dimse_association_started();
    if let Err(error) = socket.set_blocking_mode() {
        warn!(%error, "failed to configure the DIMSE socket");
        return;
    }
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(CallingAeTitles(settings.accepted_calling_ae_titles.clone()))
        .with_negotiation(StorageRoles)
        .ae_title(settings.ae_title.clone())
        .max_pdu_length(settings.max_pdu)
        .strict(false)
        .read_timeout(settings.artim_timeout)
        .write_timeout(settings.idle_timeout);
    options = options.with_abstract_syntax(uids::VERIFICATION);
    if settings.serve_query_retrieve {
        for sop_class_uid in QUERY_RETRIEVE_SOP_CLASSES {
            options = options.with_abstract_syntax(*sop_class_uid);
        }
    }
    for sop_class_uid in STORAGE_SOP_CLASSES {
        options = options.with_abstract_syntax(*sop_class_uid);
    }
    for transfer_syntax_uid in STORAGE_TRANSFER_SYNTAXES {
        options = options.with_transfer_syntax(*transfer_syntax_uid);
    }
    let established = match &settings.tls {
        Some(tls) => options
            .tls_config(tls.clone())
            .establish_tls(socket)
            .map(|association| Link::ServerTls(Box::new(association))),
        None => options.establish(socket).map(Link::Server),
    };
    let association = match established {
        Ok(association) => association,
        Err(error) => {
            info!(%error, "association not established");
            return;
        }
    };
    let calling_ae_title = association.peer_ae_title();
    span.record("calling_ae_title", calling_ae_title.as_str());
    let num_accepted = association
        .presentation_contexts()
        .iter()
        .filter(|context| {
            context.reason == dicom_ul::pdu::PresentationContextResultReason::Acceptance
        })
        .count();
    info!(
        num_accepted_contexts = num_accepted,
        "association established"
    );
    let mut association = association;
    let _ = association
        .wire()
        .socket()
        .set_read_timeout(Some(settings.idle_timeout));
    let context = AssociationContext {
        settings,
        services,
        runtime,
        peer_addr,
        calling_ae_title,
    };
    match serve_association(association, &context) {
        Ok(()) => debug!("association released"),
        Err(error) => info!(%error, "association ended"),
    }
}
