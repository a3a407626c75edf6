//! TLS setup: loads a PEM certificate chain and private key into a rustls
//! server config advertising ALPN `h2` and `http/1.1`.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::ServerConfig;

pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let open = |p: &Path| {
        File::open(p)
            .map(BufReader::new)
            .map_err(|e| format!("cannot open {}: {e}", p.display()))
    };
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut open(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid certificate PEM {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificates in {}", cert.display()));
    }
    let key_der = rustls_pemfile::private_key(&mut open(key)?)
        .map_err(|e| format!("invalid key PEM {}: {e}", key.display()))?
        .ok_or_else(|| format!("no private key in {}", key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| format!("TLS certificate/key rejected: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
