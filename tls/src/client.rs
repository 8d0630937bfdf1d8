//! The client side: a rustls client config trusting the cluster CA, and a
//! connector serving `http://` and `https://` URIs for tonic and hyper.

use crate::{TlsError, load_certs, load_key, provider};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

/// A client config trusting the CA certificates in `ca` (PEM), presenting
/// `identity` (certificate, key) when given (agents: mutual TLS).
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(ca)? {
        roots.add(c).map_err(|e| TlsError::Pem {
            path: ca.to_owned(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = load_certs(cert)?;
            let k = load_key(key)?;
            builder
                .with_client_auth_cert(chain, k)
                .map_err(|e| TlsError::Pair {
                    cert: cert.to_owned(),
                    key: key.to_owned(),
                    message: e.to_string(),
                })
        }
    }
}

/// Where a client's TLS material lives; read again on every
/// [`ClientTlsFiles::config`] so renewed files are used on the next
/// connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// PEM CA certificates to verify servers with (the cluster's `ca.crt`).
    pub ca: std::path::PathBuf,
    /// Client certificate and key (agents), if any.
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl ClientTlsFiles {
    pub fn config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let id = self
            .identity
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path()));
        client_config(&self.ca, id).map(Arc::new)
    }
}

/// Connects `http://` URIs over TCP and `https://` URIs over TLS.
#[derive(Clone)]
pub struct Connector {
    tls: Option<tokio_rustls::TlsConnector>,
    connect_timeout: Option<std::time::Duration>,
}

impl Connector {
    /// For gRPC: ALPN `h2`.
    pub fn grpc(tls: Option<Arc<ClientConfig>>) -> Self {
        Self::with_alpn(tls, &[b"h2"])
    }

    /// For HTTP/1.1 clients.
    pub fn http1(tls: Option<Arc<ClientConfig>>) -> Self {
        Self::with_alpn(tls, &[b"http/1.1"])
    }

    fn with_alpn(tls: Option<Arc<ClientConfig>>, alpn: &[&[u8]]) -> Self {
        Connector {
            connect_timeout: None,
            tls: tls.map(|c| {
                let mut c = (*c).clone();
                c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
                tokio_rustls::TlsConnector::from(Arc::new(c))
            }),
        }
    }

    /// Gives up connecting (TCP) after `d`.
    pub fn connect_timeout(mut self, d: std::time::Duration) -> Self {
        self.connect_timeout = Some(d);
        self
    }

    pub fn has_tls(&self) -> bool {
        self.tls.is_some()
    }

    async fn connect(self, uri: http::Uri) -> io::Result<ClientIo> {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") | None => false,
            Some(other) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{uri}: unsupported scheme {other:?} (use http:// or https://)"),
                ));
            }
        };
        let host = uri.host().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: no host"))
        })?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let connect = TcpStream::connect((host.as_str(), port));
        let tcp = match self.connect_timeout {
            None => connect.await?,
            Some(d) => tokio::time::timeout(d, connect).await.map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting to {host}:{port} timed out after {d:?}"),
                )
            })??,
        };
        let _ = tcp.set_nodelay(true);
        if !https {
            return Ok(ClientIo(TokioIo::new(ClientStream::Plain(tcp))));
        }
        let Some(tls) = self.tls else {
            return Err(io::Error::other(TlsError::NoCaForHttps {
                address: uri.to_string(),
            }));
        };
        let name = ServerName::try_from(host.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
        let stream = tls.connect(name, tcp).await.map_err(|e| {
            io::Error::new(e.kind(), format!("TLS handshake with {host}:{port}: {e}"))
        })?;
        Ok(ClientIo(TokioIo::new(ClientStream::Tls(Box::new(stream)))))
    }
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = ClientIo;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<ClientIo>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}

/// A tonic channel to `endpoint` (http or https), connecting now.
pub async fn channel(
    endpoint: Endpoint,
    tls: Option<Arc<ClientConfig>>,
) -> Result<Channel, tonic::transport::Error> {
    if tls.is_none() && endpoint.uri().scheme_str() != Some("https") {
        return endpoint.connect().await;
    }
    endpoint.connect_with_connector(Connector::grpc(tls)).await
}

/// A tonic channel to `endpoint` (http or https), connecting on first use.
pub fn channel_lazy(endpoint: Endpoint, tls: Option<Arc<ClientConfig>>) -> Channel {
    if tls.is_none() && endpoint.uri().scheme_str() != Some("https") {
        return endpoint.connect_lazy();
    }
    endpoint.connect_with_connector_lazy(Connector::grpc(tls))
}

enum ClientStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A client connection for hyper (and tonic).
pub struct ClientIo(TokioIo<ClientStream>);

impl hyper::rt::Read for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl hyper_util::client::legacy::connect::Connection for ClientIo {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        let c = hyper_util::client::legacy::connect::Connected::new();
        match self.0.inner() {
            ClientStream::Tls(s) if s.get_ref().1.alpn_protocol() == Some(b"h2") => {
                c.negotiated_h2()
            }
            _ => c,
        }
    }
}
