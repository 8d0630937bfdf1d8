//! Keep-alive connections to backends and the response body that gives a
//! connection back to its pool once the response has been read to the end.
//!
//! The router pools hyper's HTTP/1.1 client connections itself rather than
//! going through a generic client: it needs to know whether a request left
//! the proxy (`try_send_request` hands back a request that was not written,
//! so it can go to another instance) and to count requests in flight per
//! endpoint until their bodies end (the drain protocol).

use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::balance::{Backend, InFlight};

/// A sender to a backend connection.
pub(crate) type Sender = SendRequest<Incoming>;

/// Idle keep-alive connections to one backend, most recently used last.
#[derive(Debug, Default)]
pub(crate) struct Idle {
    conns: Mutex<Vec<(Sender, Instant)>>,
}

impl Idle {
    /// The most recently used connection that is still open and was idle
    /// less than `timeout`.
    pub(crate) fn take(&self, timeout: Duration) -> Option<Sender> {
        let now = Instant::now();
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((s, since)) = conns.pop() {
            if !s.is_closed() && now.saturating_duration_since(since) < timeout {
                return Some(s);
            }
        }
        None
    }

    /// Keeps `s` for reuse, unless `max` are kept already.
    pub(crate) fn put(&self, s: Sender, max: usize) {
        if s.is_closed() {
            return;
        }
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if conns.len() < max {
            conns.push((s, Instant::now()));
        }
    }

    /// Closes every idle connection (the backend is gone).
    pub(crate) fn clear(&self) {
        let drained = std::mem::take(&mut *self.conns.lock().unwrap_or_else(|e| e.into_inner()));
        drop(drained);
    }
}

/// Why no connection to a backend could be had. The request was not sent.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect failed: {0}")]
    Io(#[from] io::Error),
    #[error("HTTP handshake failed: {0}")]
    Handshake(#[from] hyper::Error),
}

/// Opens a TCP connection to `b` within `timeout`, with Nagle off.
pub(crate) async fn tcp_connect(b: &Backend, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let fut = async {
        match b.addr() {
            Some(a) => TcpStream::connect(a).await,
            None => TcpStream::connect((&*b.id().host, b.id().port)).await,
        }
    };
    let s = tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| ConnectError::Timeout(timeout))??;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// A sender ready for a request: an idle pooled one, or a new connection.
pub(crate) async fn checkout(
    b: &Backend,
    idle_timeout: Duration,
    connect_timeout: Duration,
) -> Result<Sender, ConnectError> {
    while let Some(mut s) = b.idle.take(idle_timeout) {
        if s.is_ready() {
            return Ok(s);
        }
        // The previous response has just ended; the connection's task
        // has not caught up yet.
        if let Ok(Ok(())) = tokio::time::timeout(connect_timeout, s.ready()).await {
            return Ok(s);
        }
    }
    let stream = tcp_connect(b, connect_timeout).await?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, Incoming>(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "backend connection ended");
        }
    });
    sender.ready().await?;
    Ok(sender)
}

/// A request's hold on its backend until the response body ends: the
/// in-flight count, and the connection to give back when it is reusable.
#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) guard: InFlight,
    pub(crate) sender: Option<Sender>,
    pub(crate) max_idle: usize,
}

impl Lease {
    /// The response was read to its end: the connection goes back to the
    /// pool and the request stops counting.
    fn finish(mut self) {
        if let Some(s) = self.sender.take() {
            self.guard.backend().idle.put(s, self.max_idle);
        }
    }
}

/// The body of every response the proxy sends.
#[derive(Debug)]
pub enum ProxyBody {
    /// An answer of the proxy's own (errors, overload).
    Full(Option<Bytes>),
    /// A backend's response body.
    Upstream(Upstream),
}

impl ProxyBody {
    pub fn text(s: &'static str) -> ProxyBody {
        ProxyBody::Full(Some(Bytes::from_static(s.as_bytes())))
    }

    pub fn empty() -> ProxyBody {
        ProxyBody::Full(None)
    }

    pub(crate) fn upstream(body: Incoming, lease: Option<Lease>) -> ProxyBody {
        ProxyBody::Upstream(Upstream { body, lease })
    }
}

/// A backend's response body, holding its lease.
#[derive(Debug)]
pub struct Upstream {
    body: Incoming,
    lease: Option<Lease>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // A body hyper did not need to poll (empty, or fully known) still
        // leaves a reusable connection; one dropped halfway does not.
        if let Some(l) = self.lease.take()
            && self.body.is_end_stream()
        {
            l.finish();
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream(u) => {
                let r = Pin::new(&mut u.body).poll_frame(cx);
                match &r {
                    Poll::Ready(None) => {
                        if let Some(l) = u.lease.take() {
                            l.finish();
                        }
                    }
                    Poll::Ready(Some(Ok(_))) if u.body.is_end_stream() => {
                        if let Some(l) = u.lease.take() {
                            l.finish();
                        }
                    }
                    Poll::Ready(Some(Err(_))) => {
                        // The connection is broken: never reused.
                        u.lease.take();
                    }
                    _ => {}
                }
                r
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Upstream(u) => u.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Upstream(u) => u.body.size_hint(),
        }
    }
}
