//! In-test backends, a router stack on real sockets, and a small client.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_core::endpoints::{
    Endpoint, EndpointKey, EndpointSet, EndpointState, PortMeta, Publisher, View,
};
use agora_router::proxy::{Exposure, Proxy, ProxyConfig};
use agora_router::routes::{Acks, Router, RoutesConfig};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What an in-test backend does with a request.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// 200, body = the backend's name; request facts in `x-seen-*` headers.
    Echo,
    /// Like `Echo`, after a delay.
    Slow(Duration),
    /// WebSocket-style upgrade, then echoes bytes.
    Upgrade,
    /// Like `Echo`, and closes connections idle for 50 ms.
    IdleClose,
}

/// An in-test HTTP backend on 127.0.0.1.
pub struct Backend {
    pub port: u16,
    pub requests: Arc<AtomicUsize>,
    /// Connections accepted.
    pub conns: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn backend(name: &'static str, mode: Mode) -> Backend {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    let conns = Arc::new(AtomicUsize::new(0));
    let accepted = conns.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            accepted.fetch_add(1, Ordering::SeqCst);
            let count = count.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    count.fetch_add(1, Ordering::SeqCst);
                    serve(name, mode, req)
                });
                let mut b = hyper::server::conn::http1::Builder::new();
                if let Mode::IdleClose = mode {
                    b.timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(Duration::from_millis(50));
                }
                let _ = b
                    .serve_connection(TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Backend {
        port,
        requests,
        conns,
        task,
    }
}

async fn serve(
    name: &'static str,
    mode: Mode,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    match mode {
        Mode::Slow(d) => tokio::time::sleep(d).await,
        Mode::Upgrade => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let mut io = TokioIo::new(up);
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            return Ok(Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("upgrade", "websocket")
                .header("connection", "upgrade")
                .body(Full::new(Bytes::new()))
                .unwrap());
        }
        Mode::Echo | Mode::IdleClose => {}
    }
    let h = req.headers();
    let get = |n: &str| {
        h.get(n)
            .map(|v| v.to_str().unwrap_or("?").to_string())
            .unwrap_or_default()
    };
    let mut r = Response::builder()
        .header("x-seen-host", get("host"))
        .header("x-seen-xff", get("x-forwarded-for"))
        .header("x-seen-proto", get("x-forwarded-proto"))
        .header("x-seen-xfh", get("x-forwarded-host"))
        .header("x-seen-path", req.uri().to_string());
    if h.contains_key("x-hop") {
        r = r.header("x-hop-leaked", "1");
    }
    Ok(r.body(Full::new(Bytes::from_static(name.as_bytes())))
        .unwrap())
}

/// A backend that accepts connections and reads requests but never
/// answers (with `close`, it closes the connection instead); counts
/// connections that carried a request.
pub struct Hang {
    pub port: u16,
    pub requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Hang {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn hang(close: bool) -> Hang {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let count = count.clone();
            held.push(tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if let Ok(n) = s.read(&mut buf).await
                    && n > 0
                {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                if !close {
                    std::future::pending::<()>().await;
                }
                drop(s);
            }));
        }
    });
    Hang {
        port,
        requests,
        task,
    }
}

/// A port nothing listens on.
pub async fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

pub fn ep(task: &str, port: u16, state: EndpointState) -> Endpoint {
    Endpoint {
        task_id: task.into(),
        host: "127.0.0.1".into(),
        port: port.into(),
        state,
    }
}

pub fn port(public: bool, vhosts: &[&str], path: Option<&str>) -> PortMeta {
    PortMeta {
        name: Some("http".into()),
        protocol: "tcp".into(),
        service_port: None,
        public,
        vhosts: vhosts.iter().map(|s| s.to_string()).collect(),
        path: path.map(str::to_string),
        labels: BTreeMap::new(),
        scale_to_zero: false,
    }
}

pub fn set(app: &str, meta: PortMeta, eps: Vec<Endpoint>) -> EndpointSet {
    EndpointSet::new(
        EndpointKey {
            app_id: app.into(),
            port_index: 0,
        },
        meta,
        eps,
    )
}

/// Acks as they come.
#[derive(Default)]
pub struct Recorded(pub Mutex<Vec<(&'static str, u64)>>);

impl Acks for Recorded {
    fn applied(&self, v: u64) {
        self.0.lock().unwrap().push(("applied", v));
    }
    fn drained(&self, v: u64) {
        self.0.lock().unwrap().push(("drained", v));
    }
}

impl Recorded {
    pub fn has(&self, what: &'static str, v: u64) -> bool {
        self.0.lock().unwrap().contains(&(what, v))
    }
}

/// A router following a publisher, with proxies on real sockets.
pub struct Stack {
    pub publisher: Publisher,
    pub views: watch::Sender<Arc<View>>,
    pub router: Arc<Router>,
    pub acks: Arc<Recorded>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Stack {
    pub fn new() -> Stack {
        Stack::with_config(RoutesConfig::default())
    }

    pub fn with_config(config: RoutesConfig) -> Stack {
        let (views, rx) = watch::channel(Arc::new(View::default()));
        let router = Router::new(config);
        let acks = Arc::new(Recorded::default());
        let follow = tokio::spawn(router.clone().follow(rx, acks.clone()));
        Stack {
            publisher: Publisher::default(),
            views,
            router,
            acks,
            tasks: vec![follow],
        }
    }

    /// Starts a proxy; returns its address.
    pub async fn proxy(&mut self, config: ProxyConfig) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let p = Proxy::new(self.router.clone(), config);
        self.tasks.push(tokio::spawn(p.serve(l)));
        addr
    }

    pub async fn edge(&mut self) -> SocketAddr {
        self.proxy(ProxyConfig::default()).await
    }

    pub async fn internal(&mut self) -> SocketAddr {
        self.proxy(ProxyConfig {
            exposure: Exposure::Internal,
            ..ProxyConfig::default()
        })
        .await
    }

    /// Publishes the app's sets and waits until the router routes by them.
    pub async fn publish(&mut self, app: &str, sets: Vec<EndpointSet>) -> u64 {
        self.publisher.publish_app(app, sets);
        let v = self.publisher.version();
        self.views
            .send_replace(Arc::new(View::from_snapshot(self.publisher.snapshot())));
        for _ in 0..500 {
            if self.router.routes().version == v {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("router did not apply version {v}");
    }
}

impl Stack {
    /// Waits until no request is in flight to any endpoint.
    pub async fn idle(&self) {
        let routes = self.router.routes();
        let all = || {
            routes
                .edge
                .hosts()
                .filter_map(|h| routes.edge.lookup(h, "/"))
                .chain(routes.l4.values())
                .flat_map(|r| r.balancer.backends().iter())
                .all(|b| b.in_flight() == 0)
        };
        eventually("in-flight counts back to zero", all).await;
    }
}

/// The answer to one request: status, headers, body.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// One HTTP/1.1 request on a new connection.
pub async fn get(proxy: SocketAddr, host: &str, path: &str) -> Answer {
    let mut c = Client::connect(proxy).await;
    c.get(host, path).await
}

/// An HTTP/1.1 client connection (keep-alive).
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        Client { sender }
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Answer {
        let req = Request::get(path)
            .header("host", host)
            .header("connection", "x-hop")
            .header("x-hop", "1")
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.sender.ready().await.unwrap();
        let resp = self.sender.send_request(req).await.unwrap();
        answer(resp).await
    }
}

pub async fn answer(resp: Response<Incoming>) -> Answer {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// One HTTP/2 (prior knowledge) request.
pub async fn get_h2(proxy: SocketAddr, authority: &str, path: &str) -> Answer {
    let s = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(s),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("http://{authority}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    answer(resp).await
}

/// Polls `cond` every 5 ms for up to 5 s.
pub async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A backend speaking raw bytes: on each connection it reads request
/// heads (and a `Content-Length` body) and answers each with the next of
/// `answers`, written `piece` bytes at a time (1 ms apart), closing the
/// connection after an answer when `close_after` says so. The requests it
/// read are kept, head and body as text.
pub struct Raw {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<String>>>,
    pub conns: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn raw(answers: Vec<Vec<u8>>, piece: usize, close_after: bool) -> Raw {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let conns = Arc::new(AtomicUsize::new(0));
    let (seen2, conns2) = (seen.clone(), conns.clone());
    let answers = Arc::new(Mutex::new(answers.into_iter()));
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            conns2.fetch_add(1, Ordering::SeqCst);
            let (seen, answers) = (seen2.clone(), answers.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(req) = read_request(&mut s, &mut buf).await else {
                        return;
                    };
                    seen.lock().unwrap().push(req);
                    let Some(a) = answers.lock().unwrap().next() else {
                        return;
                    };
                    for p in a.chunks(piece.max(1)) {
                        if s.write_all(p).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    if close_after {
                        return;
                    }
                }
            });
        }
    });
    Raw {
        port,
        seen,
        conns,
        task,
    }
}

/// Reads one request (head, then a `Content-Length` or chunked body) as
/// text; `None` at the end of the connection.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let mut b = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut b).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let body_end = if let Some(cl) = head.lines().find_map(|l| l.strip_prefix("content-length:")) {
        head_end + cl.trim().parse::<usize>().ok()?
    } else if head.contains("transfer-encoding: chunked") {
        loop {
            if let Some(i) = buf[head_end..].windows(5).position(|w| w == b"0\r\n\r\n")
                && (i == 0 || buf[head_end + i - 1] == b'\n')
            {
                break head_end + i + 5;
            }
            let n = s.read(&mut b).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&b[..n]);
        }
    } else {
        head_end
    };
    while buf.len() < body_end {
        let n = s.read(&mut b).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
    }
    let req = String::from_utf8_lossy(&buf[..body_end]).into_owned();
    buf.drain(..body_end);
    Some(req)
}

/// A request of any method and body on a client connection.
impl Client {
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Answer {
        self.sender.ready().await.unwrap();
        let resp = self.sender.send_request(req).await.unwrap();
        answer(resp).await
    }
}

/// A TCP backend that writes its name, then echoes.
pub struct Echo {
    pub port: u16,
    pub conns: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn echo(name: &'static str) -> Echo {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let conns = Arc::new(AtomicUsize::new(0));
    let count = conns.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if s.write_all(name.as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Echo { port, conns, task }
}
