//! The proxy's HTTP/1.1 client to backends, run on the request's own task.
//!
//! hyper's client connection runs every backend connection as a task of its
//! own: a request crosses a channel to that task, and the response head and
//! each body chunk cross back through two more, with a wake-up of the other
//! task at every step. Here the task serving the client connection does the
//! exchange itself: it writes the request head (and streams a request body),
//! reads and parses the response head with `httparse`, and streams the
//! response body straight from the backend socket as hyper's server polls
//! it. No task, no channel, no allocation per request beyond the response's
//! headers; the connection goes back to its pool when the body has ended.
//!
//! What it speaks (RFC 9112): requests always as HTTP/1.1, a body framed by
//! its `Content-Length` or else chunked; responses framed as the RFC says
//! (no body for `HEAD`, 1xx, 204 and 304; chunked; `Content-Length`; or up
//! to the close of the connection), interim 1xx answers skipped, `101
//! Switching Protocols` handed to the caller with the socket. A connection is
//! reused only when both messages ended cleanly and the backend did not ask
//! to close it.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::{Body, Frame, Incoming};
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;

/// The largest response head (or chunked trailer section) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in a response head.
const MAX_HEADERS: usize = 100;
/// Read buffer room reserved before a read.
const READ_CHUNK: usize = 16 * 1024;
/// How soon after a request was written on a reused connection a close
/// without answer still means "the backend closed the idle connection"
/// (the close was already on its way). Later, the backend may have
/// processed the request (then crashed): it is not sent again.
const RESEND_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);
/// A response body that makes no progress for this long is cut: a stalled
/// backend must not hold the client connection, its task and the drain
/// accounting of the instance forever (the route timeout covers only the
/// time to the response head). Streams with longer silences (SSE without
/// keep-alive comments) are cut too: send a comment or ping within 60 s.
const BODY_IDLE: std::time::Duration = std::time::Duration::from_secs(60);
/// Body data up to this size is copied out of the read buffer (which then
/// stays reusable); larger pieces are handed out without a copy.
const COPY_BELOW: usize = 4 * 1024;
/// The longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// What went wrong with a backend exchange.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("backend connection: {0}")]
    Io(#[from] io::Error),
    #[error("the backend closed the connection before the response was complete")]
    Closed,
    #[error("bad response from the backend: {0}")]
    Parse(&'static str),
    #[error("the backend's response head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("reading the client's request body: {0}")]
    ClientBody(hyper::Error),
    #[error("the backend sent nothing for {}s in the middle of its response", BODY_IDLE.as_secs())]
    Stalled,
}

impl BackendError {
    /// The connection was closed or reset under the exchange.
    fn is_closed(&self) -> bool {
        match self {
            BackendError::Closed => true,
            BackendError::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }
}

/// A request that could not be sent: `NotSent` hands the request back
/// (nothing reached the backend, so it may go to another one).
#[derive(Debug)]
pub(crate) enum SendError {
    NotSent(Box<Request<Incoming>>, io::Error),
    Failed(BackendError),
}

/// A connection to a backend, idle or carrying one exchange.
#[derive(Debug)]
pub(crate) struct Conn {
    io: TcpStream,
    /// Bytes read from the backend and not consumed yet.
    rbuf: BytesMut,
    /// The request head being encoded (reused).
    wbuf: Vec<u8>,
    /// Taken from the pool: it carried an exchange before, and the backend
    /// may have closed it (its keep-alive timeout) just as it was taken.
    pub(crate) reused: bool,
}

impl Conn {
    pub(crate) fn new(io: TcpStream) -> Conn {
        Conn {
            io,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: Vec::with_capacity(512),
            reused: false,
        }
    }

    /// Whether an idle connection can carry a request: the backend has
    /// neither closed it nor sent anything since its last response. Costs
    /// no system call unless the socket has signalled readiness since.
    pub(crate) fn is_open(&mut self) -> bool {
        if !self.rbuf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut b = [0u8; 1];
                // 0: closed; data: out of turn, unusable; WouldBlock: fine
                // (and the readiness is cleared).
                matches!(self.io.try_read(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// The socket and any bytes read past the last response (for a tunnel).
    pub(crate) fn into_parts(self) -> (TcpStream, BytesMut) {
        (self.io, self.rbuf)
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < 1024 {
            self.rbuf.reserve(READ_CHUNK);
        }
        // `read_buf` reads through `poll_read`, which clears the socket's
        // readiness after a short read: the next wait costs no `EAGAIN`.
        let read = self.io.read_buf(&mut self.rbuf);
        pin!(read).poll(cx)
    }

    fn encode_head(&mut self, parts: &http::request::Parts, chunked: bool) {
        let w = &mut self.wbuf;
        w.clear();
        w.extend_from_slice(parts.method.as_str().as_bytes());
        w.push(b' ');
        let target = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/");
        w.extend_from_slice(target.as_bytes());
        w.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in &parts.headers {
            w.extend_from_slice(name.as_str().as_bytes());
            w.extend_from_slice(b": ");
            w.extend_from_slice(value.as_bytes());
            w.extend_from_slice(b"\r\n");
        }
        if chunked {
            w.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        w.extend_from_slice(b"\r\n");
    }
}

/// Sends `req` on `conn` and reads the response head. The request is
/// handed back (`NotSent`) when not one byte of it was accepted by the
/// socket, or — a bodyless idempotent request on a reused connection —
/// when the backend closed the connection without a byte of answer within
/// [`RESEND_WINDOW`] (it closed the idle connection as it was taken).
/// Otherwise a written request is never resent.
pub(crate) async fn send(
    mut conn: Conn,
    req: Request<Incoming>,
) -> Result<(Response<()>, Exchange), SendError> {
    let (parts, body) = req.into_parts();
    let has_body = !body.is_end_stream();
    let chunked = has_body && !parts.headers.contains_key(header::CONTENT_LENGTH);
    conn.encode_head(&parts, chunked);
    let first = poll_fn(|cx| Pin::new(&mut conn.io).poll_write(cx, &conn.wbuf)).await;
    let written = match first {
        Ok(n) if n > 0 => n,
        Ok(_) => {
            let e = io::Error::from(io::ErrorKind::WriteZero);
            return Err(SendError::NotSent(
                Box::new(Request::from_parts(parts, body)),
                e,
            ));
        }
        Err(e) => {
            return Err(SendError::NotSent(
                Box::new(Request::from_parts(parts, body)),
                e,
            ));
        }
    };
    let head_only = parts.method == Method::HEAD;
    // A bodyless idempotent request on a reused connection that the backend
    // closes without a byte of answer is handed back (RFC 9110 9.2.2): the
    // backend closed the idle connection as it was taken, not this request.
    let resend = conn.reused && !has_body && parts.method.is_idempotent();
    let written_at = std::time::Instant::now();
    let (req_body, spare) = if has_body {
        (
            Some(ReqBody {
                body,
                chunked,
                ended: false,
            }),
            None,
        )
    } else {
        (None, Some(body))
    };
    let mut exch = Exchange {
        conn,
        pending: Bytes::new(),
        req_body,
        answered: false,
        decoder: Decoder::Done,
        head_only,
        reusable: true,
        idle: None,
    };
    if written < exch.conn.wbuf.len() {
        exch.pending = Bytes::copy_from_slice(&exch.conn.wbuf[written..]);
    }
    let head = match poll_fn(|cx| exch.poll_head(cx)).await {
        Ok(head) => head,
        Err(e)
            if resend
                && !exch.answered
                && e.is_closed()
                && written_at.elapsed() < RESEND_WINDOW =>
        {
            if let Some(body) = spare {
                return Err(SendError::NotSent(
                    Box::new(Request::from_parts(parts, body)),
                    io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "the backend closed a kept-alive connection without answering",
                    ),
                ));
            }
            return Err(SendError::Failed(e));
        }
        Err(e) => return Err(SendError::Failed(e)),
    };
    Ok((head, exch))
}

#[derive(Debug)]
struct ReqBody {
    body: Incoming,
    chunked: bool,
    /// The body has ended (its last framing may still be in `pending`).
    ended: bool,
}

/// How the response body is framed, and where the reading is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decoder {
    /// Bytes left of a `Content-Length` body.
    Length(u64),
    Chunked(Chunk),
    /// Up to the close of the connection.
    Eof,
    /// Switched protocols: the socket belongs to the tunnel.
    Upgraded,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Bytes left of the current chunk.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields up to an empty line.
    Trailers,
}

/// One request/response exchange on a backend connection, from the
/// response head on: the response body is read through it, and the rest
/// of a request body (if any) is written as it is polled.
#[derive(Debug)]
pub(crate) struct Exchange {
    conn: Conn,
    /// Request bytes not written yet.
    pending: Bytes,
    req_body: Option<ReqBody>,
    decoder: Decoder,
    head_only: bool,
    /// The backend did not ask to close, and nothing went wrong.
    reusable: bool,
    /// A byte of the response arrived.
    answered: bool,
    /// Armed while the body waits for the backend ([`BODY_IDLE`]).
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Exchange {
    /// Whether the response body has been read to its end.
    pub(crate) fn body_ended(&self) -> bool {
        matches!(self.decoder, Decoder::Done | Decoder::Length(0))
    }

    /// What is known of the rest of the response body's length.
    pub(crate) fn size_hint(&self) -> hyper::body::SizeHint {
        match self.decoder {
            Decoder::Length(n) => hyper::body::SizeHint::with_exact(n),
            Decoder::Done | Decoder::Upgraded => hyper::body::SizeHint::with_exact(0),
            Decoder::Chunked(_) | Decoder::Eof => hyper::body::SizeHint::default(),
        }
    }

    /// The connection, when both messages ended cleanly and it may carry
    /// another request.
    pub(crate) fn into_reusable(self) -> Option<Conn> {
        let clean = self.reusable
            && self.body_ended()
            && self.pending.is_empty()
            && self.req_body.is_none();
        clean.then_some(self.conn)
    }

    /// The connection, after `101 Switching Protocols`.
    pub(crate) fn into_conn(self) -> Conn {
        self.conn
    }

    /// Writes what is pending of the request, then the request body as it
    /// comes. Ready(Ok) once all of it is written.
    fn poll_request(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BackendError>> {
        loop {
            while !self.pending.is_empty() {
                let n = ready!(Pin::new(&mut self.conn.io).poll_write(cx, &self.pending))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
                }
                self.pending.advance(n);
            }
            let Some(rb) = &mut self.req_body else {
                return Poll::Ready(Ok(()));
            };
            if rb.ended {
                self.req_body = None;
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut rb.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers of a request body are not passed on.
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        self.pending = if rb.chunked {
                            let mut b = BytesMut::with_capacity(data.len() + 16);
                            b.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                            b.extend_from_slice(&data);
                            b.extend_from_slice(b"\r\n");
                            b.freeze()
                        } else {
                            data
                        };
                    }
                }
                Some(Err(e)) => {
                    self.reusable = false;
                    return Poll::Ready(Err(BackendError::ClientBody(e)));
                }
                None => {
                    rb.ended = true;
                    if rb.chunked {
                        self.pending = Bytes::from_static(b"0\r\n\r\n");
                    }
                }
            }
        }
    }

    /// Drives the request (body) and reads until the final response head.
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<Response<()>, BackendError>> {
        if let Poll::Ready(Err(e)) = self.poll_request(cx) {
            return Poll::Ready(Err(e));
        }
        loop {
            if let Some(head) = self.parse_head()? {
                return Poll::Ready(Ok(head));
            }
            let n = ready!(self.conn.poll_fill(cx))?;
            if n == 0 {
                return Poll::Ready(Err(BackendError::Closed));
            }
            self.answered = true;
        }
    }

    /// A final response head, if the buffer holds one (interim 1xx heads
    /// are consumed and skipped).
    fn parse_head(&mut self) -> Result<Option<Response<()>>, BackendError> {
        loop {
            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut fields);
            let len = match parsed.parse(&self.conn.rbuf) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => {
                    if self.conn.rbuf.len() > MAX_HEAD {
                        return Err(BackendError::HeadTooLarge);
                    }
                    return Ok(None);
                }
                Err(httparse::Error::TooManyHeaders) => return Err(BackendError::HeadTooLarge),
                Err(_) => return Err(BackendError::Parse("malformed response head")),
            };
            let code = parsed.code.unwrap_or(0);
            let status =
                StatusCode::from_u16(code).map_err(|_| BackendError::Parse("bad status code"))?;
            let version = match parsed.version {
                Some(0) => Version::HTTP_10,
                _ => Version::HTTP_11,
            };
            if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
                // 100 Continue, 103 Early Hints...: not passed on.
                self.conn.rbuf.advance(len);
                continue;
            }
            // Offsets of names and values in the head, then the head is
            // split off the buffer and the values share its bytes.
            let base = self.conn.rbuf.as_ptr() as usize;
            let mut spans = [(0usize, 0usize, 0usize, 0usize); MAX_HEADERS];
            let count = parsed.headers.len();
            for (span, f) in spans.iter_mut().zip(parsed.headers.iter()) {
                let v = f.value.as_ptr() as usize - base;
                *span = (
                    f.name.as_ptr() as usize - base,
                    f.name.len(),
                    v,
                    f.value.len(),
                );
            }
            let head = self.conn.rbuf.split_to(len).freeze();
            let mut headers = HeaderMap::with_capacity(count);
            for &(n, nl, v, vl) in &spans[..count] {
                let name = HeaderName::from_bytes(&head[n..n + nl])
                    .map_err(|_| BackendError::Parse("bad header name"))?;
                // httparse checked the value's bytes.
                let value = HeaderValue::from_maybe_shared(head.slice(v..v + vl))
                    .map_err(|_| BackendError::Parse("bad header value"))?;
                headers.append(name, value);
            }
            self.decide(status, version, &mut headers)?;
            if status.as_u16() >= 400 && (self.req_body.is_some() || !self.pending.is_empty()) {
                // A refusal before the whole request body was sent: the
                // rest is not sent (the backend would read it as further
                // requests), and the connection is not reused.
                self.req_body = None;
                self.pending = Bytes::new();
                self.reusable = false;
            }
            // The version stays HTTP/1.1: the client hears the proxy's
            // version, whatever the backend's (an HTTP/1.0 backend's body
            // up to its close goes on chunked, on a kept-alive connection).
            let mut resp = Response::new(());
            *resp.status_mut() = status;
            *resp.headers_mut() = headers;
            return Ok(Some(resp));
        }
    }

    /// The response's framing (RFC 9112 6.3) and whether the connection
    /// stays open after it.
    fn decide(
        &mut self,
        status: StatusCode,
        version: Version,
        h: &mut HeaderMap,
    ) -> Result<(), BackendError> {
        let close = connection_has(h, "close");
        self.reusable = if version == Version::HTTP_10 {
            !close && connection_has(h, "keep-alive")
        } else {
            !close
        };
        if status == StatusCode::SWITCHING_PROTOCOLS {
            self.decoder = Decoder::Upgraded;
            self.reusable = false;
            return Ok(());
        }
        if self.head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED
        {
            self.decoder = Decoder::Done;
            return Ok(());
        }
        if h.contains_key(header::TRANSFER_ENCODING) {
            if h.remove(header::CONTENT_LENGTH).is_some() {
                // Ambiguous framing: read it as the RFC says (chunked), pass
                // no Content-Length on (RFC 9112 6.3), never reuse.
                self.reusable = false;
            }
            let last = h
                .get_all(header::TRANSFER_ENCODING)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|s| s.split(','))
                .map(str::trim)
                .rfind(|s| !s.is_empty());
            if last.is_some_and(|c| c.eq_ignore_ascii_case("chunked")) {
                self.decoder = Decoder::Chunked(Chunk::Size);
            } else {
                self.decoder = Decoder::Eof;
                self.reusable = false;
            }
            return Ok(());
        }
        let mut length: Option<u64> = None;
        for v in h.get_all(header::CONTENT_LENGTH) {
            for part in v.to_str().unwrap_or("x").split(',') {
                let part = part.trim();
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(BackendError::Parse("bad Content-Length"));
                }
                let n: u64 = part
                    .parse()
                    .map_err(|_| BackendError::Parse("bad Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(BackendError::Parse("conflicting Content-Length"));
                }
                length = Some(n);
            }
        }
        if let Some(n) = length {
            // One canonical value goes on ("5, 5" or "+5" would not).
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        match length {
            Some(0) => self.decoder = Decoder::Done,
            Some(n) => self.decoder = Decoder::Length(n),
            None => {
                self.decoder = Decoder::Eof;
                self.reusable = false;
            }
        }
        Ok(())
    }

    /// The next piece of the response body.
    pub(crate) fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BackendError>>> {
        if self.req_body.is_some() || !self.pending.is_empty() {
            // A backend may answer before it has the whole request body.
            if let Poll::Ready(Err(e)) = self.poll_request(cx) {
                self.reusable = false;
                return Poll::Ready(Some(Err(e)));
            }
        }
        loop {
            match self.decoder {
                Decoder::Done | Decoder::Upgraded | Decoder::Length(0) => {
                    return Poll::Ready(None);
                }
                Decoder::Length(left) => {
                    if self.conn.rbuf.is_empty() {
                        let n = ready!(self.poll_body_fill(cx))?;
                        if n == 0 {
                            self.fail();
                            return Poll::Ready(Some(Err(BackendError::Closed)));
                        }
                    }
                    let take = (self.conn.rbuf.len() as u64).min(left) as usize;
                    let rest = left - take as u64;
                    self.decoder = if rest == 0 {
                        Decoder::Done
                    } else {
                        Decoder::Length(rest)
                    };
                    if rest == 0 && self.conn.rbuf.len() > take {
                        // More than announced: the connection is out of step.
                        self.reusable = false;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(self.take(take)))));
                }
                Decoder::Eof => {
                    if self.conn.rbuf.is_empty() {
                        let n = ready!(self.poll_body_fill(cx))?;
                        if n == 0 {
                            self.decoder = Decoder::Done;
                            return Poll::Ready(None);
                        }
                    }
                    let n = self.conn.rbuf.len();
                    return Poll::Ready(Some(Ok(Frame::data(self.take(n)))));
                }
                Decoder::Chunked(state) => match self.chunk_step(state)? {
                    Step::Frame(f) => return Poll::Ready(Some(Ok(f))),
                    Step::Again => continue,
                    Step::NeedMore => {
                        let n = ready!(self.poll_body_fill(cx))?;
                        if n == 0 {
                            self.fail();
                            return Poll::Ready(Some(Err(BackendError::Closed)));
                        }
                    }
                },
            }
        }
    }

    /// Reads more of the body; [`BackendError::Stalled`] after
    /// [`BODY_IDLE`] without a byte.
    fn poll_body_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, BackendError>> {
        match self.conn.poll_fill(cx) {
            Poll::Ready(r) => {
                self.idle = None;
                Poll::Ready(r.map_err(BackendError::from))
            }
            Poll::Pending => {
                let idle = self
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(BODY_IDLE)));
                if idle.as_mut().poll(cx).is_ready() {
                    self.idle = None;
                    self.fail();
                    return Poll::Ready(Err(BackendError::Stalled));
                }
                Poll::Pending
            }
        }
    }

    fn fail(&mut self) {
        self.reusable = false;
        self.decoder = Decoder::Done;
    }

    /// The first `n` buffered bytes as body data.
    fn take(&mut self, n: usize) -> Bytes {
        if n < COPY_BELOW {
            let b = Bytes::copy_from_slice(&self.conn.rbuf[..n]);
            self.conn.rbuf.advance(n);
            b
        } else {
            self.conn.rbuf.split_to(n).freeze()
        }
    }

    fn chunk_step(&mut self, state: Chunk) -> Result<Step, BackendError> {
        let buf = &mut self.conn.rbuf;
        match state {
            Chunk::Size => {
                let Some(end) = buf.iter().position(|&b| b == b'\n') else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err(BackendError::Parse("chunk-size line too long"));
                    }
                    return Ok(Step::NeedMore);
                };
                let line = &buf[..end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let digits = line
                    .iter()
                    .position(|b| !b.is_ascii_hexdigit())
                    .unwrap_or(line.len());
                let rest = &line[digits..];
                if digits == 0
                    || digits > 15
                    || !(rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t'))
                {
                    return Err(BackendError::Parse("bad chunk size"));
                }
                let mut size = 0u64;
                for &d in &line[..digits] {
                    size = size * 16 + u64::from((d as char).to_digit(16).unwrap_or(0));
                }
                buf.advance(end + 1);
                self.decoder = Decoder::Chunked(if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                });
                Ok(Step::Again)
            }
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let take = (buf.len() as u64).min(left) as usize;
                let rest = left - take as u64;
                self.decoder = Decoder::Chunked(if rest == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(rest)
                });
                Ok(Step::Frame(Frame::data(self.take(take))))
            }
            Chunk::DataEnd => {
                let n = if buf.starts_with(b"\r\n") {
                    2
                } else if buf.starts_with(b"\n") {
                    1
                } else if buf.len() < 2 && (buf.is_empty() || buf[0] == b'\r') {
                    return Ok(Step::NeedMore);
                } else {
                    return Err(BackendError::Parse("no CRLF after chunk data"));
                };
                buf.advance(n);
                self.decoder = Decoder::Chunked(Chunk::Size);
                Ok(Step::Again)
            }
            Chunk::Trailers => {
                if buf.starts_with(b"\r\n") || buf.starts_with(b"\n") {
                    buf.advance(if buf[0] == b'\r' { 2 } else { 1 });
                    self.decoder = Decoder::Done;
                    if !buf.is_empty() {
                        self.reusable = false;
                    }
                    return Ok(Step::Again);
                }
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                match httparse::parse_headers(buf, &mut fields) {
                    Ok(httparse::Status::Complete((len, parsed))) => {
                        let mut trailers = HeaderMap::with_capacity(parsed.len());
                        for f in parsed.iter() {
                            if let (Ok(n), Ok(v)) = (
                                HeaderName::from_bytes(f.name.as_bytes()),
                                HeaderValue::from_bytes(f.value),
                            ) {
                                trailers.append(n, v);
                            }
                        }
                        buf.advance(len);
                        self.decoder = Decoder::Done;
                        if !buf.is_empty() {
                            self.reusable = false;
                        }
                        Ok(Step::Frame(Frame::trailers(trailers)))
                    }
                    Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => Ok(Step::NeedMore),
                    Ok(httparse::Status::Partial) | Err(_) => {
                        Err(BackendError::Parse("bad chunked trailer section"))
                    }
                }
            }
        }
    }
}

enum Step {
    Frame(Frame<Bytes>),
    Again,
    NeedMore,
}

fn connection_has(h: &HeaderMap, token: &str) -> bool {
    h.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}
