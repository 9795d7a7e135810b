//! TLS and mutual TLS on the internal gRPC hops (gateway → chat-core,
//! chat-core → agent-worker), with rustls. A server's certificate, key and
//! (for mutual TLS) the CA its clients' certificates must chain to are read
//! again whenever one of the files changes, so rotated certificates are
//! served without a restart; connections already open keep theirs.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use futures::Stream;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client has to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes that may be under way before accepting waits.
const HANDSHAKE_QUEUE: usize = 128;

/// The files of a gRPC server's TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA certificates; when set, clients must present a certificate
    /// chaining to one of them (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

impl ServerTlsFiles {
    /// The files from a service's settings: both of cert and key, or neither.
    pub fn from_settings(
        cert: Option<&Path>,
        key: Option<&Path>,
        client_ca: Option<&Path>,
    ) -> Result<Option<Self>, String> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(Self {
                cert: cert.to_owned(),
                key: key.to_owned(),
                client_ca: client_ca.map(Path::to_owned),
            })),
            (None, None) if client_ca.is_some() => {
                Err("GRPC_TLS_CLIENT_CA_FILE needs GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE".into())
            }
            (None, None) => Ok(None),
            _ => Err("GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE go together".into()),
        }
    }

    fn paths(&self) -> Vec<&Path> {
        let mut paths = vec![self.cert.as_path(), self.key.as_path()];
        paths.extend(self.client_ca.as_deref());
        paths
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("failed to read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("failed to read a private key from {}: {e}", path.display()))
}

fn roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("invalid CA certificate in {}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The rustls configuration of `files`, offering HTTP/2.
fn server_config(files: &ServerTlsFiles) -> Result<ServerConfig, String> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider)
                .build()
                .map_err(|e| format!("invalid client CA {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(read_certs(&files.cert)?, read_key(&files.key)?)
        .map_err(|e| {
            format!(
                "certificate {} and key {} do not make a TLS identity: {e}",
                files.cert.display(),
                files.key.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn modified(paths: &[&Path]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

// === impl ServerTls ===

/// A gRPC server's TLS configuration, current with its files.
#[derive(Debug)]
pub struct ServerTls {
    files: ServerTlsFiles,
    current: RwLock<(Arc<ServerConfig>, Vec<Option<SystemTime>>)>,
}

impl ServerTls {
    /// Reads the files; the error is one line naming the file at fault.
    pub fn load(files: ServerTlsFiles) -> Result<Arc<Self>, String> {
        let stamps = modified(&files.paths());
        let config = Arc::new(server_config(&files)?);
        Ok(Arc::new(Self {
            files,
            current: RwLock::new((config, stamps)),
        }))
    }

    /// Reads the files again if any changed since they were last read; a
    /// set that does not load is logged and the previous one kept.
    pub fn reload_if_changed(&self) {
        let stamps = modified(&self.files.paths());
        if self.current.read().unwrap_or_else(|p| p.into_inner()).1 == stamps {
            return;
        }
        match server_config(&self.files) {
            Ok(config) => {
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = (Arc::new(config), stamps);
            }
            Err(error) => {
                tracing::warn!(%error, "TLS files changed but do not load; keeping the previous ones");
                self.current.write().unwrap_or_else(|p| p.into_inner()).1 = stamps;
            }
        }
    }

    /// Checks the files for changes every `every` while the task lives.
    pub fn spawn_reload(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let tls = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(tls) = tls.upgrade() else { return };
                tls.reload_if_changed();
            }
        })
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().unwrap_or_else(|p| p.into_inner()).0.clone())
    }

    /// The connections accepted on `listener`, each after its TLS handshake
    /// with the configuration current when it connected. Handshakes run
    /// concurrently; one that fails or takes too long is dropped.
    pub fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
    ) -> impl Stream<Item = io::Result<TlsStream<TcpStream>>> + Send + 'static {
        let (tx, rx) = tokio::sync::mpsc::channel(HANDSHAKE_QUEUE);
        tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                if tx.is_closed() {
                    return;
                }
                let acceptor = self.acceptor();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok(tls)).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

// === client ===

/// The files of a gRPC client's TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// PEM CA certificates the server's certificate must chain to.
    pub ca: PathBuf,
    /// PEM certificate and key presented to a server that asks (mutual TLS).
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl ClientTlsFiles {
    /// The files from a client's settings (`what` names them in errors).
    pub fn from_settings(
        what: &str,
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Option<Self>, String> {
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert.to_owned(), key.to_owned())),
            (None, None) => None,
            _ => {
                return Err(format!(
                    "{what}_TLS_CERT_FILE and {what}_TLS_KEY_FILE go together"
                ));
            }
        };
        match ca {
            Some(ca) => Ok(Some(Self {
                ca: ca.to_owned(),
                identity,
            })),
            None if identity.is_some() => Err(format!(
                "{what}_TLS_CERT_FILE needs {what}_TLS_CA_FILE (the CA of the server's certificate)"
            )),
            None => Ok(None),
        }
    }

    /// tonic's configuration of these files, verifying the server's
    /// certificate against the host of `url` (the name the operator wrote:
    /// discovery connects to the addresses it resolves to); the error names
    /// the file at fault.
    pub fn config(&self, url: &str) -> Result<tonic::transport::ClientTlsConfig, String> {
        let read =
            |path: &Path| std::fs::read(path).map_err(|e| format!("failed to read {}: {e}", path.display()));
        read_certs(&self.ca)?;
        let host = url
            .parse::<http::Uri>()
            .ok()
            .and_then(|uri| uri.host().map(|h| h.trim_matches(['[', ']']).to_owned()))
            .ok_or_else(|| format!("`{url}` names no host"))?;
        let mut config = tonic::transport::ClientTlsConfig::new()
            .domain_name(host)
            .ca_certificate(tonic::transport::Certificate::from_pem(read(&self.ca)?));
        if let Some((cert, key)) = &self.identity {
            read_certs(cert)?;
            read_key(key)?;
            config = config.identity(tonic::transport::Identity::from_pem(read(cert)?, read(key)?));
        }
        Ok(config)
    }
}

// === settings ===

/// A gRPC server's TLS settings, the same for chat-core and agent-workers.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServerTlsSettings {
    /// PEM certificate chain: with `--grpc-tls-key`, gRPC is served over TLS only (rustls);
    /// the files are read again when they change.
    #[arg(long = "grpc-tls-cert", env = "GRPC_TLS_CERT_FILE", value_name = "PATH")]
    pub cert: Option<PathBuf>,

    /// PEM private key of `--grpc-tls-cert`.
    #[arg(long = "grpc-tls-key", env = "GRPC_TLS_KEY_FILE", value_name = "PATH")]
    pub key: Option<PathBuf>,

    /// PEM CA certificates: clients must present a certificate that chains to one (mutual TLS).
    #[arg(
        long = "grpc-tls-client-ca",
        env = "GRPC_TLS_CLIENT_CA_FILE",
        value_name = "PATH"
    )]
    pub client_ca: Option<PathBuf>,

    /// Seconds between checks of the TLS files for changes.
    #[arg(
        long = "grpc-tls-reload-secs",
        env = "GRPC_TLS_RELOAD_SECS",
        default_value_t = 10
    )]
    pub reload_secs: u64,
}

impl ServerTlsSettings {
    /// The files, when TLS is configured; the error is one line.
    pub fn files(&self) -> Result<Option<ServerTlsFiles>, String> {
        if self.reload_secs == 0 {
            return Err("GRPC_TLS_RELOAD_SECS must be positive".into());
        }
        ServerTlsFiles::from_settings(
            self.cert.as_deref(),
            self.key.as_deref(),
            self.client_ca.as_deref(),
        )
    }

    /// Loads the files and keeps them current; `None` without TLS.
    pub fn load(&self) -> Result<Option<Arc<ServerTls>>, String> {
        let Some(files) = self.files()? else {
            return Ok(None);
        };
        let tls = ServerTls::load(files)?;
        tls.spawn_reload(Duration::from_secs(self.reload_secs));
        Ok(Some(tls))
    }
}
