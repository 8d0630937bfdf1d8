//! Keep-alive connections to backends and the response body that gives a
//! connection back to its pool once the response has been read to the end.
//!
//! The router pools its own HTTP/1.1 connections (`h1`), driven by the
//! task of the request that uses them: it needs to know whether a request
//! left the proxy (a request not one byte of which was written can go to
//! another instance) and to count requests in flight per endpoint until
//! their bodies end (the drain protocol).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::h1::{Conn, Exchange};
use crate::balance::{Backend, InFlight};
use crate::load::RequestLoad;

/// Idle keep-alive connections to one backend, most recently used last.
#[derive(Debug, Default)]
pub(crate) struct Idle {
    conns: Mutex<VecDeque<(Conn, Instant)>>,
}

impl Idle {
    /// The most recently used connection that is still open and was idle
    /// less than `timeout`.
    pub(crate) fn take(&self, timeout: Duration) -> Option<Conn> {
        let now = Instant::now();
        loop {
            let (mut c, since) = self
                .conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_back()?;
            if now.saturating_duration_since(since) < timeout && c.is_open() {
                c.reused = true;
                return Some(c);
            }
        }
    }

    /// Keeps `c` for reuse, unless `max` are kept already; connections
    /// idle for `timeout` or more are closed on the way.
    pub(crate) fn put(&self, c: Conn, max: usize, timeout: Duration) {
        let now = Instant::now();
        let mut expired = Vec::new();
        {
            let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            while conns
                .front()
                .is_some_and(|(_, since)| now.saturating_duration_since(*since) >= timeout)
            {
                expired.extend(conns.pop_front());
            }
            if conns.len() < max {
                conns.push_back((c, now));
            }
        }
        drop(expired);
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

/// A connection ready for a request: an idle pooled one, or a new one.
pub(crate) async fn checkout(
    b: &Backend,
    idle_timeout: Duration,
    connect_timeout: Duration,
) -> Result<Conn, ConnectError> {
    if let Some(c) = b.idle.take(idle_timeout) {
        return Ok(c);
    }
    Ok(Conn::new(tcp_connect(b, connect_timeout).await?))
}

/// A request's hold on its backend until the response body ends: the
/// in-flight count, and where the connection goes back to.
#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) guard: InFlight,
    /// The request's measurement: it completes when the lease ends (kept
    /// for its `Drop`).
    #[allow(dead_code)]
    pub(crate) load: RequestLoad,
    pub(crate) max_idle: usize,
    pub(crate) idle_timeout: Duration,
}

/// The body of every response the proxy sends.
#[derive(Debug)]
// The upstream variant is large (the exchange and its read buffer's
// handle), the other a few words: boxing it would cost an allocation per
// response on the hot path for the sake of the rare error answers.
#[allow(clippy::large_enum_variant)]
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

    pub(crate) fn upstream(exchange: Exchange, lease: Lease) -> ProxyBody {
        ProxyBody::Upstream(Upstream {
            exchange: Some(exchange),
            lease: Some(lease),
        })
    }
}

/// A backend's response body, holding its lease.
#[derive(Debug)]
pub struct Upstream {
    exchange: Option<Exchange>,
    lease: Option<Lease>,
}

impl Upstream {
    /// The response was read to its end: a reusable connection goes back
    /// to the pool and the request stops counting.
    fn finish(&mut self) {
        let (Some(x), Some(l)) = (self.exchange.take(), self.lease.take()) else {
            return;
        };
        if let Some(c) = x.into_reusable() {
            l.guard.backend().idle.put(c, l.max_idle, l.idle_timeout);
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // A body hyper did not need to poll (empty, or fully known) still
        // leaves a reusable connection; one dropped halfway does not.
        if self.exchange.as_ref().is_some_and(Exchange::body_ended) {
            self.finish();
        }
    }
}

/// Errors of a response body (the backend's or the client's side).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream(u) => {
                let Some(x) = u.exchange.as_mut() else {
                    return Poll::Ready(None);
                };
                match x.poll_body(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(None) => {
                        u.finish();
                        Poll::Ready(None)
                    }
                    Poll::Ready(Some(Ok(f))) => {
                        if x.body_ended() {
                            u.finish();
                        }
                        Poll::Ready(Some(Ok(f)))
                    }
                    Poll::Ready(Some(Err(e))) => {
                        // The connection is broken: never reused.
                        u.exchange.take();
                        u.lease.take();
                        Poll::Ready(Some(Err(e.into())))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Upstream(u) => u.exchange.as_ref().is_none_or(Exchange::body_ended),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Upstream(u) => match u.exchange.as_ref() {
                Some(x) => x.size_hint(),
                None => SizeHint::with_exact(0),
            },
        }
    }
}
