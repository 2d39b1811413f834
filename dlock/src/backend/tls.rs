//! TLS, shared by every networked backend: the three URL parameters every backend reads the
//! same way (`tls_ca=PATH`, `tls_cert=PATH`, `tls_key=PATH`, PEM files), reading those files off
//! the async workers, the rustls crypto provider, and turning a failed handshake into a message
//! that says which of the usual mistakes it was.
//!
//! TLS itself is the client crate's (redis-rs, sqlx, etcd-client/tonic, zookeeper-client), each
//! built with rustls when dlock's cargo feature `tls` is on; no OpenSSL anywhere.

use crate::backend::url_params::{mask_password, take_param};
use crate::{Error, Result};

/// The `tls_ca`, `tls_cert` and `tls_key` parameters of a URL: paths of PEM files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsParams {
    /// Trust this CA (PEM) instead of the system's roots.
    pub ca: Option<String>,
    /// Client certificate (PEM), sent when the server asks for one.
    pub cert: Option<String>,
    /// The client certificate's private key (PEM).
    pub key: Option<String>,
}

/// The files [`TlsParams`] name, read. Deliberately no `Debug`: it holds a private key.
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
pub(crate) struct TlsFiles {
    pub ca: Option<Vec<u8>>,
    /// (certificate, key)
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsParams {
    /// Takes the three parameters out of `url`; returns the URL without them and them. A
    /// certificate without its key (or a key without its certificate) is an
    /// [`Error::InvalidUrl`].
    pub(crate) fn take(url: &str) -> Result<(String, TlsParams)> {
        let (rest, ca) = take_param(url, "tls_ca");
        let (rest, cert) = take_param(&rest, "tls_cert");
        let (rest, key) = take_param(&rest, "tls_key");
        let params = TlsParams { ca, cert, key };
        for (name, value) in [
            ("tls_ca", &params.ca),
            ("tls_cert", &params.cert),
            ("tls_key", &params.key),
        ] {
            if value.as_deref().is_some_and(str::is_empty) {
                return Err(invalid(
                    url,
                    format!("`{name}=` names no file; give the path of a PEM file"),
                ));
            }
        }
        if params.cert.is_some() != params.key.is_some() {
            return Err(invalid(
                url,
                "a client certificate needs both `tls_cert=PATH` and `tls_key=PATH`".into(),
            ));
        }
        Ok((rest, params))
    }

    /// Whether any of the three was given.
    pub(crate) fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some()
    }

    /// Reads the files (on a blocking thread, not an async worker). A file that cannot be read
    /// is an [`Error::InvalidUrl`] naming the parameter, the path and why; never its content.
    #[allow(dead_code)] // unused when no networked backend is compiled
    pub(crate) async fn read(&self, url: &str) -> Result<TlsFiles> {
        let params = self.clone();
        let read = tokio::task::spawn_blocking(move || -> std::result::Result<_, String> {
            let file = |name: &str, path: &Option<String>| -> std::result::Result<_, String> {
                match path {
                    None => Ok(None),
                    Some(path) => std::fs::read(path)
                        .map(Some)
                        .map_err(|e| format!("cannot read `{name}={path}`: {e}")),
                }
            };
            let ca = file("tls_ca", &params.ca)?;
            let cert = file("tls_cert", &params.cert)?;
            let key = file("tls_key", &params.key)?;
            Ok(TlsFiles {
                ca,
                identity: cert.zip(key),
            })
        });
        match read.await {
            Ok(Ok(files)) => Ok(files),
            Ok(Err(reason)) => Err(invalid(url, reason)),
            Err(e) => Err(invalid(url, format!("reading the TLS files failed: {e}"))),
        }
    }
}

fn invalid(url: &str, reason: String) -> Error {
    Error::InvalidUrl {
        url: mask_password(url),
        reason,
    }
}

/// [`Error::InvalidUrl`] when `url` asks for TLS (`wants`) and dlock was built without the
/// `tls` feature; `Ok` otherwise.
pub(crate) fn require_feature(url: &str, wants: bool) -> Result<()> {
    if wants && !cfg!(feature = "tls") {
        return Err(invalid(
            url,
            "this URL asks for TLS, which needs dlock's cargo feature `tls` \
             (dlock = { version = \"0.1\", features = [\"tls\", ...] })"
                .into(),
        ));
    }
    Ok(())
}

/// Makes rustls' ring provider the process default, unless the program installed one: redis-rs
/// asks rustls for the process default, and with more than one provider compiled into the
/// program (another crate may enable aws-lc-rs) rustls cannot pick one by itself.
#[cfg(feature = "tls")]
pub(crate) fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Err only when another thread installed one first: that one serves.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
    });
}

/// Why a TLS connection to `host` (`host:port`) fails, found by a handshake of our own with the
/// same CA and client certificate (on a blocking thread, bounded to a few seconds): for client
/// crates that report every failed connect as a timeout (zookeeper-client does), so the user
/// still learns whether it was the CA, the name, the client certificate or a plaintext port.
#[cfg(feature = "tls")]
#[allow(dead_code)] // unused when no backend needing it is compiled
pub(crate) async fn probe(
    host: &str,
    ca: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
) -> String {
    let host = host.to_owned();
    let probe = tokio::task::spawn_blocking(move || handshake(&host, ca, identity));
    match probe.await {
        Ok(Ok(())) => "a TLS handshake with the same settings succeeds".into(),
        Ok(Err(why)) => why,
        Err(e) => format!("the TLS probe failed: {e}"),
    }
}

#[cfg(feature = "tls")]
fn handshake(
    host: &str,
    ca: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
) -> std::result::Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::sync::Arc;
    use std::time::Duration;

    let (name, _) = host.rsplit_once(':').unwrap_or((host, ""));
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let server_name = ServerName::try_from(name.to_owned())
        .map_err(|e| format!("`{name}` is not a host name TLS can check: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &ca {
        for cert in CertificateDer::pem_slice_iter(ca) {
            let cert = cert.map_err(|e| format!("the CA file is not PEM certificates: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("the CA file holds a certificate rustls refuses: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(&cert)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| format!("the client certificate file is not PEM: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(&key)
                .map_err(|e| format!("the client key file is not a PEM private key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("the client certificate and key do not fit: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    let addr = host
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("`{host}` does not resolve"))?;
    let mut socket = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("{host}: {e}"))?;
    let _ = socket.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = socket.set_write_timeout(Some(Duration::from_secs(2)));
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), server_name).map_err(|e| e.to_string())?;
    let described = |e: std::io::Error| {
        let text = e.to_string();
        match explain(&text, true) {
            Some(why) => format!("{why} ({text})"),
            None if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
            ) =>
            {
                format!(
                    "TLS: the server closed the connection during the TLS handshake; it looks \
                     like a plaintext port (or the server refused this client: does it want a \
                     client certificate?) ({text})"
                )
            }
            None if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
            {
                "TLS: the server did not answer the TLS handshake; it looks like a plaintext \
                 port (drop the TLS scheme or parameters, or point at the server's TLS port)"
                    .to_owned()
            }
            None => format!("TLS handshake: {text}"),
        }
    };
    while conn.is_handshaking() {
        conn.complete_io(&mut socket).map_err(described)?;
    }
    // TLS 1.3 servers refuse a client certificate after the handshake: one short read shows it.
    let _ = socket.set_read_timeout(Some(Duration::from_millis(300)));
    let mut stream = rustls::Stream::new(&mut conn, &mut socket);
    let _ = stream.flush();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Err(e)
            if e.kind() != std::io::ErrorKind::WouldBlock
                && e.kind() != std::io::ErrorKind::TimedOut =>
        {
            Err(described(e))
        }
        _ => Ok(()),
    }
}

/// What a failed connect means when TLS was involved, from the client's error text (rustls'
/// error names, and what a server says to a client speaking the wrong protocol). `None` when
/// the text is not a TLS failure this knows.
pub(crate) fn explain(error: &str, tls: bool) -> Option<&'static str> {
    let e = error.to_ascii_lowercase();
    let has = |needle: &str| e.contains(needle);
    if has("unknownissuer") || has("unknown issuer") || has("unknownca") || has("unknown ca") {
        return Some(
            "TLS: the server's certificate is not signed by a CA this client trusts; \
             give the CA that signed it with `tls_ca=PATH`",
        );
    }
    if has("notvalidforname") || has("not valid for name") || has("certificate is only valid for") {
        return Some(
            "TLS: the server's certificate is not valid for the host name in the URL; \
             connect by a name (or IP) the certificate lists",
        );
    }
    if has("expired") && has("certificate") {
        return Some("TLS: the server's certificate has expired (or is not valid yet)");
    }
    if has("invalidcontenttype")
        || has("corrupt message")
        || has("wrong version number")
        || has("does not support tls")
        || has("doesn't support tls")
        || has("not support ssl")
        || has("server does not support")
    {
        return Some(
            "TLS: the server did not answer in TLS; it looks like a plaintext port \
             (drop the TLS scheme or parameters, or point at the server's TLS port)",
        );
    }
    let closed = has("connection reset")
        || has("unexpected end of file")
        || has("unexpected eof")
        || has("broken pipe")
        || has("connection closed")
        || has("connection aborted");
    if has("certificaterequired") || has("certificate required") || has("handshake failure") {
        return Some(
            "TLS: the server wants a client certificate this client did not offer or it \
             refused; give one with `tls_cert=PATH&tls_key=PATH`",
        );
    }
    if has("handshake eof") || (tls && closed) {
        return Some(
            "TLS: the server closed the connection during the TLS handshake; it looks like a \
             plaintext port (or the server refused this client)",
        );
    }
    if !tls && closed {
        return Some(
            "the server closed the connection without answering; if it expects TLS on this \
             port, use the TLS form of the URL (`rediss://`, `etcds://`, `?sslmode=require`, ...)",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{explain, TlsParams};

    #[test]
    fn takes_the_three_parameters() {
        let (rest, p) =
            TlsParams::take("rediss://h:1/0?tls_ca=/c.pem&replicas=1&tls_cert=/a&tls_key=/k")
                .unwrap();
        assert_eq!(rest, "rediss://h:1/0?replicas=1");
        assert_eq!(p.ca.as_deref(), Some("/c.pem"));
        assert_eq!(p.cert.as_deref(), Some("/a"));
        assert_eq!(p.key.as_deref(), Some("/k"));
        assert!(TlsParams::take("rediss://h:1?tls_cert=/a").is_err());
        assert!(TlsParams::take("rediss://h:1?tls_ca=").is_err());
        let (rest, p) = TlsParams::take("redis://h:1").unwrap();
        assert_eq!(rest, "redis://h:1");
        assert!(!p.any());
    }

    #[test]
    fn explains_the_usual_mistakes() {
        assert!(explain("invalid peer certificate: UnknownIssuer", true)
            .unwrap()
            .contains("tls_ca"));
        assert!(explain(
            "invalid peer certificate: certificate not valid for name \"x\"",
            true
        )
        .unwrap()
        .contains("host name"));
        assert!(
            explain("received corrupt message of type InvalidContentType", true)
                .unwrap()
                .contains("plaintext")
        );
        assert!(explain("Connection reset by peer (os error 104)", false)
            .unwrap()
            .contains("expects TLS"));
        assert!(explain("Connection reset by peer (os error 104)", true)
            .unwrap()
            .contains("plaintext port"));
        assert_eq!(explain("Connection refused", false), None);
    }
}
