//! Mutual TLS on the peer channel (design §2 invariant 7): the cluster CA,
//! the node certificates, and the rustls configurations built from them.
//!
//! Every agent holds one certificate signed by the cluster CA, carrying its
//! name as a DNS name and its peer IP address(es) as subject alternative
//! names. It presents that certificate both as a server (peers dial it by IP,
//! so the IP SAN is what they verify) and as a client (the peer server asks
//! for a certificate and accepts any one the cluster CA signed). The CA is
//! the only trusted root on both sides: the system's roots play no part.
//!
//! # Layout
//! - generation, shared by `mailherd tls` and `mailherd-lab up`: [`init_ca`]
//!   writes `ca.pem` and `ca.key`, [`issue`] writes `NAME.pem` and
//!   `NAME.key` signed by that CA. Keys are created 0600 and nothing is ever
//!   overwritten.
//! - [`PeerTls::load`]: reads a `[tls]` section's files into a rustls server
//!   config (client certificate required) and a reqwest client for peers.
//! - [`TlsListener`]: a listener for `axum::serve` that hands over only
//!   connections whose handshake succeeded and logs every refusal with the
//!   peer's address.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mailherd_config::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long the CA and node certificates are valid. Long on purpose: there
/// is no automatic rotation, and an expired certificate would cut a node off
/// its cluster. Rotate by issuing new files and restarting the agents.
const CERTIFICATE_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Certificates start being valid this long before they were made, so a
/// peer whose clock is a little behind accepts them at once.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(3600);

/// A peer that connects but does not finish its handshake within this time
/// is dropped, so half-open connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong making, reading or using the TLS files. Every variant
/// names the file it is about when there is one.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("refusing to overwrite {path}")]
    Exists { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot make the {what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("a node certificate needs at least one IP address (the node's peer address)")]
    NoAddresses,
    #[error("the TLS configuration is unusable: {reason}")]
    Config { reason: String },
}

/// The two files of a cluster CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFiles {
    /// The CA certificate: every agent's `tls.ca_file`.
    pub cert: PathBuf,
    /// The CA private key: needed only to issue node certificates; keep it
    /// off the nodes.
    pub key: PathBuf,
}

impl CaFiles {
    /// Where [`init_ca`] puts the CA in `dir`.
    pub fn in_dir(dir: &Path) -> CaFiles {
        CaFiles {
            cert: dir.join("ca.pem"),
            key: dir.join("ca.key"),
        }
    }
}

/// The two files of one node: its `tls.cert_file` and `tls.key_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl NodeFiles {
    /// Where [`issue`] puts the files of node `name` in `dir`.
    pub fn in_dir(dir: &Path, name: &str) -> NodeFiles {
        NodeFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        }
    }
}

/// Makes a new cluster CA in `dir` (created if missing): `ca.pem` and
/// `ca.key` (0600). Refuses if either file exists.
pub fn init_ca(dir: &Path) -> Result<CaFiles, TlsError> {
    let files = CaFiles::in_dir(dir);
    refuse_existing(&[&files.cert, &files.key])?;

    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "mailherd cluster CA");
    // The CA signs node certificates only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params);
    let key = KeyPair::generate().map_err(|source| TlsError::Generate {
        what: "CA key",
        source,
    })?;
    let cert = params
        .self_signed(&key)
        .map_err(|source| TlsError::Generate {
            what: "CA certificate",
            source,
        })?;

    create_dir(dir)?;
    write_new(&files.key, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&files.cert, cert.pem().as_bytes(), 0o644)?;
    Ok(files)
}

/// Issues the certificate of node `name` with the CA in `ca_dir`, valid for
/// server and client authentication, with `name` as DNS name and every
/// address in `ips` as IP address SAN. Writes `out_dir/NAME.pem` and
/// `out_dir/NAME.key` (0600); refuses if either exists.
pub fn issue(
    ca_dir: &Path,
    name: &str,
    ips: &[IpAddr],
    out_dir: &Path,
) -> Result<NodeFiles, TlsError> {
    if ips.is_empty() {
        return Err(TlsError::NoAddresses);
    }
    // The name becomes a DNS name in the certificate and part of two file
    // names, so it must be a plain hostname.
    let plain_hostname = !name.is_empty()
        && name.len() <= 253
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !plain_hostname {
        return Err(TlsError::Config {
            reason: format!(
                "the node name `{name}` cannot be a DNS name: use letters, digits, '-' and '.'"
            ),
        });
    }
    let ca = CaFiles::in_dir(ca_dir);
    let files = NodeFiles::in_dir(out_dir, name);
    refuse_existing(&[&files.cert, &files.key])?;

    let ca_cert_pem = read_text(&ca.cert)?;
    let ca_key = KeyPair::from_pem(&read_text(&ca.key)?).map_err(|error| TlsError::Invalid {
        path: ca.key.clone(),
        reason: format!("not a PEM private key: {error}"),
    })?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key).map_err(|error| TlsError::Invalid {
            path: ca.cert.clone(),
            reason: format!("not a PEM CA certificate: {error}"),
        })?;

    let mut params =
        CertificateParams::new(vec![name.to_string()]).map_err(|error| TlsError::Config {
            reason: format!("the node name `{name}` is not a valid DNS name: {error}"),
        })?;
    params
        .subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params);
    let key = KeyPair::generate().map_err(|source| TlsError::Generate {
        what: "node key",
        source,
    })?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|source| TlsError::Generate {
            what: "node certificate",
            source,
        })?;

    create_dir(out_dir)?;
    write_new(&files.key, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&files.cert, cert.pem().as_bytes(), 0o644)?;
    Ok(files)
}

fn set_validity(params: &mut CertificateParams) {
    let now = SystemTime::now();
    params.not_before = (now - CLOCK_SKEW_ALLOWANCE).into();
    params.not_after = (now + CERTIFICATE_VALIDITY).into();
}

fn refuse_existing(paths: &[&PathBuf]) -> Result<(), TlsError> {
    for path in paths {
        if path.exists() {
            return Err(TlsError::Exists {
                path: path.to_path_buf(),
            });
        }
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// Creates `path` with `mode` from the start (a key is never readable by
/// others, not even for a moment) and fails if it exists.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        file.write_all(contents)?;
        file.sync_all()
    };
    write().map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists => TlsError::Exists {
            path: path.to_path_buf(),
        },
        _ => TlsError::Write {
            path: path.to_path_buf(),
            source,
        },
    })
}

fn read_text(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// This node's side of the peer channel's mutual TLS.
#[derive(Clone)]
pub struct PeerTls {
    /// Serves peers: presents this node's certificate and requires one
    /// signed by the cluster CA from every client.
    server: Arc<ServerConfig>,
    /// Dials peers: presents this node's certificate and trusts only the
    /// cluster CA.
    client: reqwest::Client,
}

impl PeerTls {
    /// Reads the CA, certificate and key named by `files`.
    /// `connect_timeout` bounds how long dialling a peer may take.
    pub fn load(files: &TlsFiles, connect_timeout: Duration) -> Result<PeerTls, TlsError> {
        let ca_pem = read_bytes(&files.ca_file)?;
        let cert_pem = read_bytes(&files.cert_file)?;
        let key_pem = read_bytes(&files.key_file)?;

        let ca_certs = parse_certificates(&files.ca_file, &ca_pem)?;
        let chain = parse_certificates(&files.cert_file, &cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| TlsError::Invalid {
            path: files.key_file.clone(),
            reason: format!("no PEM private key: {error}"),
        })?;

        let mut roots = RootCertStore::empty();
        for cert in ca_certs {
            roots.add(cert).map_err(|error| TlsError::Invalid {
                path: files.ca_file.clone(),
                reason: format!("not a usable CA certificate: {error}"),
            })?;
        }
        // The provider is named rather than taken from the process default,
        // so that another rustls user linking a second provider cannot make
        // the agent panic at start.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|error| TlsError::Config {
                    reason: format!("client verifier from {}: {error}", files.ca_file.display()),
                })?;
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Config {
                reason: error.to_string(),
            })?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain, key)
            .map_err(|error| TlsError::Invalid {
                path: files.cert_file.clone(),
                reason: format!(
                    "certificate and {} do not fit: {error}",
                    files.key_file.display()
                ),
            })?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];

        let ca = reqwest::Certificate::from_pem(&ca_pem).map_err(|error| TlsError::Invalid {
            path: files.ca_file.clone(),
            reason: error.to_string(),
        })?;
        let identity_pem = [cert_pem.as_slice(), b"\n", key_pem.as_slice()].concat();
        let identity =
            reqwest::Identity::from_pem(&identity_pem).map_err(|error| TlsError::Invalid {
                path: files.cert_file.clone(),
                reason: format!(
                    "with {} as client identity: {error}",
                    files.key_file.display()
                ),
            })?;
        // The same settings as the consensus crate's plain client (no
        // proxies: peer traffic goes straight to the peer), plus the
        // identity and the CA as the only root.
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .https_only(true)
            .tls_certs_only([ca])
            .identity(identity)
            .build()
            .map_err(|error| TlsError::Config {
                reason: format!("peer client: {error}"),
            })?;

        Ok(PeerTls {
            server: Arc::new(server),
            client,
        })
    }

    /// The HTTP client for peer traffic (URL scheme `https`).
    pub fn client(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// The server side, for [`TlsListener::new`].
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }
}

/// Prints no key material, only that there is a configuration.
impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls").finish_non_exhaustive()
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Invalid {
            path: path.to_path_buf(),
            reason: format!("not PEM certificates: {error}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Invalid {
            path: path.to_path_buf(),
            reason: "holds no PEM certificate".to_string(),
        });
    }
    Ok(certs)
}

/// A listener for `axum::serve` that yields only TLS connections whose
/// handshake succeeded (with a client certificate the cluster CA signed).
///
/// Handshakes run in their own tasks, so a slow or silent peer never holds
/// up the others; a failed one is logged once, with the peer's address, and
/// the connection is dropped.
pub struct TlsListener {
    local_addr: SocketAddr,
    /// Connections that completed their handshake, in order of completion.
    handshaken: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    /// The accept loop; aborted when the listener is dropped (the server
    /// stopped), which closes the listening socket.
    accept_loop: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<TlsListener> {
        let local_addr = listener.local_addr()?;
        let (handshaken_tx, handshaken) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let accept_loop = tokio::spawn(accept_loop(listener, acceptor, handshaken_tx));
        Ok(TlsListener {
            local_addr,
            handshaken,
            accept_loop,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshaken: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait instead of
                // spinning (axum's own listener does the same).
                tracing::warn!(%error, "accepting a peer connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let handshaken = handshaken.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    // Fails only when the server is shutting down.
                    let _ = handshaken.send((tls, peer)).await;
                }
                // rustls reports what it refused (no certificate, one the
                // CA did not sign, not TLS at all) as InvalidData.
                Ok(Err(error)) if error.kind() == std::io::ErrorKind::InvalidData => {
                    tracing::warn!(%peer, %error, "refused a peer connection: TLS handshake failed");
                }
                // The peer hung up before the handshake was done; nothing
                // was refused. Peers do this when openraft cancels an RPC
                // whose connection is still being set up.
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "a peer hung up during the TLS handshake");
                }
                Err(_) => {
                    tracing::warn!(
                        %peer,
                        timeout = ?HANDSHAKE_TIMEOUT,
                        "refused a peer connection: no TLS handshake in time"
                    );
                }
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(connection) => connection,
            // The accept loop never ends while the listener exists, so no
            // connection can come any more: wait for the server to stop.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn keys_are_private_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init_ca(dir.path()).unwrap();
        assert_eq!(mode(&ca.key), 0o600);
        let node = issue(
            dir.path(),
            "n1",
            &["10.77.0.11".parse().unwrap()],
            dir.path(),
        )
        .unwrap();
        assert_eq!(mode(&node.key), 0o600);

        let again = init_ca(dir.path()).unwrap_err();
        assert!(again.to_string().contains("ca.pem"), "{again}");
        let again = issue(
            dir.path(),
            "n1",
            &["10.77.0.11".parse().unwrap()],
            dir.path(),
        )
        .unwrap_err();
        assert!(again.to_string().contains("n1.pem"), "{again}");
    }

    #[test]
    fn issue_names_the_missing_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let error = issue(
            dir.path(),
            "n1",
            &["10.77.0.11".parse().unwrap()],
            dir.path(),
        )
        .unwrap_err();
        assert!(matches!(error, TlsError::Read { .. }), "{error}");
        assert!(error.to_string().contains("ca.pem"), "{error}");
        let error = issue(dir.path(), "n1", &[], dir.path()).unwrap_err();
        assert!(matches!(error, TlsError::NoAddresses), "{error}");
        let error = issue(
            dir.path(),
            "../n1",
            &["10.77.0.11".parse().unwrap()],
            dir.path(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("DNS name"), "{error}");
    }

    /// A certificate issued by the CA verifies against it as both server
    /// (for its IP address) and client; one from another CA does not.
    #[test]
    fn an_issued_certificate_verifies_against_its_ca_only() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{ServerName, UnixTime};

        let dir = tempfile::tempdir().unwrap();
        let ca = init_ca(&dir.path().join("ca")).unwrap();
        let ip: IpAddr = "10.77.0.11".parse().unwrap();
        let node = issue(&dir.path().join("ca"), "n1", &[ip], &dir.path().join("out")).unwrap();
        init_ca(&dir.path().join("other")).unwrap();
        let stranger = issue(
            &dir.path().join("other"),
            "n1",
            &[ip],
            &dir.path().join("stranger"),
        )
        .unwrap();

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(&ca.cert).unwrap())
            .unwrap();
        let roots = Arc::new(roots);
        let server_verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .unwrap();
        let now = UnixTime::now();

        let cert = CertificateDer::from_pem_file(&node.cert).unwrap();
        server_verifier
            .verify_server_cert(&cert, &[], &ServerName::IpAddress(ip.into()), &[], now)
            .expect("valid for its IP address");
        server_verifier
            .verify_server_cert(&cert, &[], &ServerName::try_from("n1").unwrap(), &[], now)
            .expect("valid for its name");
        client_verifier
            .verify_client_cert(&cert, &[], now)
            .expect("valid as client");
        let other_ip = ServerName::IpAddress("10.77.0.12".parse::<IpAddr>().unwrap().into());
        assert!(server_verifier
            .verify_server_cert(&cert, &[], &other_ip, &[], now)
            .is_err());

        let stranger = CertificateDer::from_pem_file(&stranger.cert).unwrap();
        assert!(client_verifier
            .verify_client_cert(&stranger, &[], now)
            .is_err());
    }

    #[test]
    fn load_builds_both_sides_from_the_generated_files() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init_ca(dir.path()).unwrap();
        let node = issue(
            dir.path(),
            "n1",
            &["127.0.0.1".parse().unwrap()],
            dir.path(),
        )
        .unwrap();
        let files = TlsFiles {
            ca_file: ca.cert,
            cert_file: node.cert,
            key_file: node.key.clone(),
        };
        PeerTls::load(&files, Duration::from_secs(1)).unwrap();

        let broken = TlsFiles {
            key_file: files.ca_file.clone(),
            ..files
        };
        let error = PeerTls::load(&broken, Duration::from_secs(1)).unwrap_err();
        assert!(error.to_string().contains("ca.pem"), "{error}");
    }
}
