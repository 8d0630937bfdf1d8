//! Accepting connections, with or without TLS, for tonic and axum.

use crate::ServerTls;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use rustls_pki_types::CertificateDer;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a handler can learn about its connection (tonic puts it in the
/// request extensions: `req.extensions().get::<ConnInfo>()`).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote_addr: Option<SocketAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The client's certificate chain (leaf first), verified against the
    /// client CA during the handshake; `None` when it presented none.
    pub peer_certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// An accepted connection: plain TCP or TLS over TCP. A TLS connection
/// made with a client certificate is closed (reads and writes fail) once a
/// reloaded CRL revokes that certificate.
pub enum Conn {
    Plain(TcpStream, SocketAddr),
    Tls(
        Box<tokio_rustls::server::TlsStream<TcpStream>>,
        SocketAddr,
        Option<RevocationWatch>,
    ),
}

type Revoked = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// Resolves when the connection's client certificate is revoked by a CRL
/// loaded after the handshake.
pub struct RevocationWatch {
    fut: Option<Revoked>,
    addr: SocketAddr,
}

impl RevocationWatch {
    fn new(
        tls: &ServerTls,
        mut rx: tokio::sync::watch::Receiver<u64>,
        leaf: CertificateDer<'static>,
        addr: SocketAddr,
    ) -> Self {
        let weak = tls.downgrade();
        let fut: Revoked = Box::pin(async move {
            loop {
                if rx.changed().await.is_err() {
                    // The server's TLS is gone: nothing will change.
                    return std::future::pending().await;
                }
                let Some(tls) = ServerTls::upgrade(&weak) else {
                    return std::future::pending().await;
                };
                if tls.is_revoked(&leaf) {
                    return;
                }
            }
        });
        RevocationWatch {
            fut: Some(fut),
            addr,
        }
    }

    /// An error once the certificate is revoked (logged once).
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(f) = self.fut.as_mut() else {
            return Err(revoked_error());
        };
        if f.as_mut().poll(cx).is_ready() {
            self.fut = None;
            tracing::warn!(
                peer = %self.addr,
                "closing a connection: its client certificate is revoked by the reloaded CRL"
            );
            return Err(revoked_error());
        }
        Ok(())
    }
}

fn revoked_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the client certificate was revoked",
    )
}

impl Conn {
    pub fn info(&self) -> ConnInfo {
        match self {
            Conn::Plain(_, a) => ConnInfo {
                remote_addr: Some(*a),
                tls: false,
                peer_certs: None,
            },
            Conn::Tls(s, a, _) => ConnInfo {
                remote_addr: Some(*a),
                tls: true,
                peer_certs: s
                    .get_ref()
                    .1
                    .peer_certificates()
                    .filter(|c| !c.is_empty())
                    .map(|c| Arc::new(c.iter().map(|c| c.clone().into_owned()).collect())),
            },
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s, _, w) => {
                if let Some(w) = w {
                    w.check(cx)?;
                }
                Pin::new(s.as_mut()).poll_read(cx, buf)
            }
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s, _, w) => {
                if let Some(w) = w {
                    w.check(cx)?;
                }
                Pin::new(s.as_mut()).poll_write(cx, buf)
            }
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s, _, w) => {
                if let Some(w) = w {
                    w.check(cx)?;
                }
                Pin::new(s.as_mut()).poll_flush(cx)
            }
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s, _, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s, _, w) => {
                if let Some(w) = w {
                    w.check(cx)?;
                }
                Pin::new(s.as_mut()).poll_write_vectored(cx, bufs)
            }
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s, _) => s.is_write_vectored(),
            Conn::Tls(s, _, _) => s.is_write_vectored(),
        }
    }
}

/// Accepts on `listener`; with `tls`, each handshake runs concurrently (a
/// slow client holds up no one) and a failed one is logged at warn with
/// the reason (an untrusted, expired or wrong-usage client certificate
/// shows up here). Dropping the stream closes the listener at once.
pub fn incoming(listener: TcpListener, tls: Option<ServerTls>) -> Incoming {
    Incoming {
        listener,
        tls,
        handshakes: FuturesUnordered::new(),
        backoff: None,
    }
}

type Handshake = Pin<Box<dyn Future<Output = Option<Conn>> + Send>>;

/// The stream of [`incoming`] connections (never yields an error: accept
/// errors are logged and retried after a short pause).
pub struct Incoming {
    listener: TcpListener,
    tls: Option<ServerTls>,
    handshakes: FuturesUnordered<Handshake>,
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
}

fn handshake(tls: &ServerTls, tcp: TcpStream, addr: SocketAddr) -> Handshake {
    // Subscribed before the config is taken: a CRL loaded after this point
    // is checked against the connection's certificate.
    let rx = tls.subscribe();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
    let tls = tls.clone();
    Box::pin(async move {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => {
                let leaf = s
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.clone().into_owned());
                let watch = match leaf {
                    Some(leaf) if tls.verifies_clients() => {
                        Some(RevocationWatch::new(&tls, rx, leaf, addr))
                    }
                    _ => None,
                };
                Some(Conn::Tls(Box::new(s), addr, watch))
            }
            Ok(Err(e)) => {
                tracing::warn!(peer = %addr, error = %e, "TLS handshake refused");
                None
            }
            Err(_) => {
                tracing::debug!(peer = %addr, "TLS handshake timed out");
                None
            }
        }
    })
}

impl futures::Stream for Incoming {
    type Item = io::Result<Conn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(b) = this.backoff.as_mut() {
                if b.as_mut().poll(cx).is_pending() {
                    break;
                }
                this.backoff = None;
            }
            match this.listener.poll_accept(cx) {
                Poll::Ready(Ok((tcp, addr))) => {
                    // Small gRPC messages must not wait for delayed ACKs.
                    let _ = tcp.set_nodelay(true);
                    match &this.tls {
                        None => return Poll::Ready(Some(Ok(Conn::Plain(tcp, addr)))),
                        Some(tls) => this.handshakes.push(handshake(tls, tcp, addr)),
                    }
                }
                Poll::Ready(Err(e)) => {
                    // EMFILE and friends: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    this.backoff = Some(Box::pin(tokio::time::sleep(Duration::from_millis(50))));
                }
                Poll::Pending => break,
            }
        }
        loop {
            match this.handshakes.poll_next_unpin(cx) {
                Poll::Ready(Some(Some(conn))) => return Poll::Ready(Some(Ok(conn))),
                Poll::Ready(Some(None)) => continue,
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// An `axum::serve` listener over [`incoming`].
pub struct TlsListener {
    rx: Incoming,
    local: Option<SocketAddr>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, tls: Option<ServerTls>) -> Self {
        let local = listener.local_addr().ok();
        TlsListener {
            rx: incoming(listener, tls),
            local,
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        loop {
            match self.rx.next().await {
                Some(Ok(c)) => {
                    let addr = match &c {
                        Conn::Plain(_, a) | Conn::Tls(_, a, _) => *a,
                    };
                    return (c, addr);
                }
                Some(Err(_)) => continue,
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.local
            .ok_or_else(|| io::Error::other("the listener has no local address"))
    }
}
