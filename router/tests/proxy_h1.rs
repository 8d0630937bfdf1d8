//! The proxy's own HTTP/1.1 client to backends (`src/proxy/h1.rs`) on
//! real sockets: request bodies, every response framing, interim answers,
//! keep-alive and close, malformed answers. The backends write their
//! answers in small pieces so that every parser state meets a partial read.

mod proxy_util;

use std::sync::atomic::Ordering;

use agora_core::endpoints::EndpointState::Serving;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use proxy_util::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn stack_to(port: u16) -> (Stack, std::net::SocketAddr) {
    let mut s = Stack::new();
    let edge = s.edge().await;
    s.publish(
        "/web",
        vec![set("/web", port_meta(), vec![ep("w", port, Serving)])],
    )
    .await;
    (s, edge)
}

fn port_meta() -> agora_core::endpoints::PortMeta {
    port(true, &[], None)
}

fn req(method: Method, body: &'static str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri("/x")
        .header("host", "web.agora")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

#[tokio::test]
async fn every_response_framing_passes_through_and_keep_alive_follows_the_backend() {
    let answers: Vec<Vec<u8>> = vec![
        // An interim 100 before the final answer.
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na".to_vec(),
        // Chunked, with a chunk extension and a trailer section.
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-b: 1\r\n\r\n\
          5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n"
            .to_vec(),
        b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
        // HEAD: a length, no body.
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n".to_vec(),
        // The backend closes after this one.
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 3\r\n\r\nbye".to_vec(),
        b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nnext".to_vec(),
    ];
    let b = raw(answers, 3, false).await;
    let (s, edge) = stack_to(b.port).await;
    let mut c = Client::connect(edge).await;

    let a = c.send(req(Method::GET, "")).await;
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "a"));
    let a = c.send(req(Method::GET, "")).await;
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "hello world"));
    assert_eq!(a.headers["x-b"], "1");
    let a = c.send(req(Method::GET, "")).await;
    assert_eq!((a.status.as_u16(), a.body.as_str()), (204, ""));
    let a = c.send(req(Method::HEAD, "")).await;
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, ""));
    assert_eq!(a.headers["content-length"], "10");
    assert_eq!(
        b.conns.load(Ordering::SeqCst),
        1,
        "one backend connection carried all of them"
    );
    let a = c.send(req(Method::GET, "")).await;
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "bye"));
    assert!(!a.headers.contains_key("connection"), "hop-by-hop removed");
    let a = c.send(req(Method::GET, "")).await;
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "next"));
    assert_eq!(
        b.conns.load(Ordering::SeqCst),
        2,
        "`connection: close` was honoured: a new connection"
    );
    let seen = b.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 6);
    assert!(seen[0].starts_with("GET /x HTTP/1.1\r\n"), "{}", seen[0]);
    assert!(seen[3].starts_with("HEAD /x HTTP/1.1\r\n"), "{}", seen[3]);
    s.idle().await;
}

#[tokio::test]
async fn a_body_up_to_the_close_of_an_http_1_0_backend_passes_through() {
    let answers = vec![
        b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the close".to_vec(),
        b"HTTP/1.0 200 OK\r\n\r\nagain".to_vec(),
    ];
    let b = raw(answers, 4, true).await;
    let (s, edge) = stack_to(b.port).await;
    let mut c = Client::connect(edge).await;
    let a = c.send(req(Method::GET, "")).await;
    assert_eq!(
        (a.status.as_u16(), a.body.as_str()),
        (200, "until the close")
    );
    let a = c.send(req(Method::GET, "")).await;
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "again"));
    assert_eq!(b.conns.load(Ordering::SeqCst), 2, "never reused");
    s.idle().await;
}

#[tokio::test]
async fn a_large_body_streams_through_intact() {
    let body: Vec<u8> = (0..(1usize << 20)).map(|i| (i % 251) as u8).collect();
    let mut answer =
        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
    answer.extend_from_slice(&body);
    let b = raw(vec![answer.clone(), answer], 64 * 1024, false).await;
    let (s, edge) = stack_to(b.port).await;
    let mut c = TcpStream::connect(edge).await.unwrap();
    for _ in 0..2 {
        c.write_all(b"GET / HTTP/1.1\r\nHost: web.agora\r\n\r\n")
            .await
            .unwrap();
        // Head, then exactly the body.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            c.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("content-length: 1048576"), "{head}");
        let mut got = vec![0u8; body.len()];
        c.read_exact(&mut got).await.unwrap();
        assert!(got == body, "the body arrived intact");
    }
    assert_eq!(b.conns.load(Ordering::SeqCst), 1);
    s.idle().await;
}

#[tokio::test]
async fn request_bodies_reach_the_backend_with_their_framing() {
    let ok = || b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec();
    let b = raw(vec![ok(), ok(), ok()], 64, false).await;
    let (s, edge) = stack_to(b.port).await;

    // A Content-Length body.
    let mut c = Client::connect(edge).await;
    let a = c.send(req(Method::POST, "hello")).await;
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "ok"));

    // A chunked body from the client, passed on chunked.
    let mut raw_client = TcpStream::connect(edge).await.unwrap();
    raw_client
        .write_all(
            b"PUT /up HTTP/1.1\r\nHost: web.agora\r\ntransfer-encoding: chunked\r\n\r\n\
              3\r\nabc\r\n",
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    raw_client.write_all(b"2\r\nde\r\n0\r\n\r\n").await.unwrap();
    let mut head = [0u8; 12];
    raw_client.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    // An HTTP/2 request body without a length.
    let h2 = get_h2_post(edge, "web.agora", "/h2", "from h2").await;
    assert_eq!((h2.status.as_u16(), h2.body.as_str()), (200, "ok"));

    let seen = b.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    let lc: Vec<String> = seen.iter().map(|r| r.to_ascii_lowercase()).collect();
    assert!(lc[0].starts_with("post /x http/1.1\r\n"), "{}", seen[0]);
    assert!(lc[0].contains("content-length: 5\r\n"), "{}", seen[0]);
    assert!(seen[0].ends_with("\r\n\r\nhello"), "{}", seen[0]);
    assert!(
        lc[1].contains("transfer-encoding: chunked\r\n"),
        "{}",
        seen[1]
    );
    let chunked_body = &seen[1][seen[1].find("\r\n\r\n").unwrap() + 4..];
    assert_eq!(dechunk(chunked_body), "abcde", "{}", seen[1]);
    let h2_body = &seen[2][seen[2].find("\r\n\r\n").unwrap() + 4..];
    let h2_body = if lc[2].contains("transfer-encoding: chunked") {
        dechunk(h2_body)
    } else {
        h2_body.to_string()
    };
    assert_eq!(h2_body, "from h2", "{}", seen[2]);
    assert_eq!(
        b.conns.load(Ordering::SeqCst),
        1,
        "all three on one connection"
    );
    s.idle().await;
}

#[tokio::test]
async fn a_malformed_answer_is_502_and_the_request_is_not_resent() {
    let b1 = raw(vec![b"HTTP/1.1 2xx Nope\r\n\r\n".to_vec()], 100, false).await;
    let b2 = raw(vec![b"NOT HTTP AT ALL\r\n\r\n".to_vec()], 100, false).await;
    let mut s = Stack::new();
    let edge = s.edge().await;
    s.publish(
        "/web",
        vec![set(
            "/web",
            port_meta(),
            vec![ep("b1", b1.port, Serving), ep("b2", b2.port, Serving)],
        )],
    )
    .await;
    let a = get(edge, "web.agora", "/").await;
    assert_eq!(a.status.as_u16(), 502);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let sent = b1.seen.lock().unwrap().len() + b2.seen.lock().unwrap().len();
    assert_eq!(sent, 1, "sent once, never resent");
    s.idle().await;
}

/// Decodes a chunked body (no trailers).
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").expect("chunk-size line");
        let n = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

/// One HTTP/2 (prior knowledge) POST whose body has no announced length.
async fn get_h2_post(
    proxy: std::net::SocketAddr,
    authority: &str,
    path: &str,
    body: &'static str,
) -> Answer {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let s = TcpStream::connect(proxy).await.unwrap();
    type Stream =
        futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>>;
    let (mut sender, conn) = hyper::client::conn::http2::handshake::<_, _, StreamBody<Stream>>(
        TokioExecutor::new(),
        TokioIo::new(s),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let frames = vec![
        Ok(Frame::data(Bytes::from_static(&body.as_bytes()[..4]))),
        Ok(Frame::data(Bytes::from_static(&body.as_bytes()[4..]))),
    ];
    let req = Request::post(format!("http://{authority}{path}"))
        .body(StreamBody::new(futures::stream::iter(frames)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    answer(resp).await
}

/// Review findings on the response head: with both Transfer-Encoding and
/// Content-Length the body is read chunked and no Content-Length reaches
/// the client (RFC 9112 6.3); a Content-Length goes on in one canonical
/// form; one that is not digits ("+5") is a 502.
#[tokio::test]
async fn ambiguous_or_lax_content_lengths_never_reach_the_client() {
    let answers: Vec<Vec<u8>> = vec![
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 100\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n"
            .to_vec(),
        b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\n\r\nok".to_vec(),
        b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello".to_vec(),
    ];
    let b = raw(answers, 7, false).await;
    let (s, edge) = stack_to(b.port).await;
    let mut c = Client::connect(edge).await;
    let a = c.send(req(Method::GET, "")).await;
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "hello"));
    assert!(
        !a.headers.contains_key("content-length"),
        "a Content-Length next to Transfer-Encoding was passed on: {:?}",
        a.headers
    );
    let a = get(edge, "web.agora", "/").await;
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "ok"));
    assert_eq!(a.headers["content-length"], "2");
    let a = get(edge, "web.agora", "/").await;
    assert_eq!(a.status.as_u16(), 502, "content-length +5 accepted");
    drop(c);
    s.idle().await;
}

/// A backend closes a kept-alive connection just as the router sends the
/// next request on it (its keep-alive timeout): a bodyless GET is sent
/// again on a new connection, not answered 502. A POST is not resent.
#[tokio::test]
async fn a_get_on_a_kept_alive_connection_the_backend_closed_is_sent_again() {
    use tokio::net::TcpListener;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let conns = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let conns2 = conns.clone();
    let backend = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            conns2.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                // One answer per connection; the next request on it is read
                // and the connection closed without a byte of answer.
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                if got.starts_with(b"POST") {
                    // Read the short body too.
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                let _ = s.read(&mut buf).await;
            });
        }
    });
    let (s, edge) = stack_to(port).await;
    let mut c = Client::connect(edge).await;
    for i in 0..3 {
        let a = c.send(req(Method::GET, "")).await;
        assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "ok"), "GET {i}");
    }
    assert_eq!(
        conns.load(Ordering::SeqCst),
        3,
        "each GET after the first on a new connection"
    );
    // A request with a body is never sent twice.
    let a = c.send(req(Method::POST, "body")).await;
    assert_eq!(a.status.as_u16(), 502, "a POST was resent");
    drop(c);
    s.idle().await;
    backend.abort();
}
