//! TLS for the probes: one rustls client configuration per trust choice
//! (the system's roots, a CA file, or no verification at all), shared by
//! the mail dialogues and the https probe.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use mailherd_config::CheckSection;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::time::Instant;

use crate::conversation::Io;
use crate::timed_out;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The client configuration `check` asks for: `tls_verify = false` accepts
/// any certificate, `tls_ca_file` trusts only that CA, otherwise the
/// platform's trust store (the one reqwest uses too).
pub(crate) fn client_config(check: &CheckSection) -> Result<Arc<ClientConfig>, String> {
    // The two configurations that do not depend on the check are built once:
    // loading the system's roots at every probe would cost more than the
    // probe itself.
    static PLATFORM: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    static UNVERIFIED: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    if !check.verifies_tls() {
        return UNVERIFIED
            .get_or_init(|| {
                let verifier = AcceptAnyCertificate(provider());
                build(|builder| {
                    Ok(builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(verifier))
                        .with_no_client_auth())
                })
            })
            .clone();
    }
    match &check.tls_ca_file {
        // Read at every attempt: a renewed CA file is picked up.
        Some(path) => {
            let roots = read_roots(path)?;
            build(|builder| Ok(builder.with_root_certificates(roots).with_no_client_auth()))
        }
        None => PLATFORM
            .get_or_init(|| {
                let verifier = rustls_platform_verifier::Verifier::new(provider())
                    .map_err(|error| format!("loading the system's trusted roots: {error}"))?;
                build(|builder| {
                    Ok(builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(verifier))
                        .with_no_client_auth())
                })
            })
            .clone(),
    }
}

type Builder = rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>;

fn build(
    finish: impl FnOnce(Builder) -> Result<ClientConfig, String>,
) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS setup: {error}"))?;
    finish(builder).map(Arc::new)
}

fn read_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| format!("reading tls_ca_file {}: {error}", path.display()))?;
    for certificate in certificates {
        let certificate = certificate
            .map_err(|error| format!("reading tls_ca_file {}: {error}", path.display()))?;
        roots
            .add(certificate)
            .map_err(|error| format!("tls_ca_file {}: {error}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "tls_ca_file {} holds no certificate",
            path.display()
        ));
    }
    Ok(roots)
}

/// The name the server's certificate must carry: `server_name`, else the
/// address's IP.
pub(crate) fn server_name(check: &CheckSection) -> Result<ServerName<'static>, String> {
    match (&check.server_name, check.address) {
        (Some(name), _) => ServerName::try_from(name.clone())
            .map_err(|_| format!("`{name}` is not a valid TLS server name")),
        (None, Some(address)) => Ok(ServerName::IpAddress(address.ip().into())),
        (None, None) => Err("no address configured".to_string()),
    }
}

/// The TLS handshake over `stream`, bounded by the deadline.
pub(crate) async fn handshake(
    stream: Box<dyn Io>,
    check: &CheckSection,
    deadline: Instant,
) -> Result<Box<dyn Io>, String> {
    let connector = tokio_rustls::TlsConnector::from(client_config(check)?);
    let name = server_name(check)?;
    match tokio::time::timeout_at(deadline, connector.connect(name, stream)).await {
        Err(_) => Err(timed_out(check.timeout_ms, "the TLS handshake")),
        Ok(Err(error)) => Err(format!("TLS handshake: {error}")),
        Ok(Ok(stream)) => Ok(Box::new(stream)),
    }
}

/// `tls_verify = false`: any certificate for any name passes, but the
/// handshake's signatures are still checked, so the connection is still
/// TLS with whoever holds the key of the certificate shown.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Whether `name` is an IP address literal rather than a DNS name.
pub(crate) fn is_ip(name: &str) -> bool {
    name.parse::<IpAddr>().is_ok()
}
