//! Forwarding of names outside the zone to upstream resolvers
//! (`--dns-upstream`): a small stub over tokio UDP and TCP with
//! hickory-proto's message types, no cache.
//!
//! - Each forwarded query is a new message (a random id, the client's one
//!   question, its RD and CD bits, EDNS with a 1,232-byte buffer) sent
//!   from a new socket on an ephemeral port. Over UDP when the client asked
//!   over UDP, again over TCP when the UDP answer is truncated; over TCP
//!   when the client asked over TCP.
//! - An answer counts only when it is a response with the query's id and
//!   exactly the query's question (name, case-insensitively, type and
//!   class); anything else on the UDP socket is ignored, and over TCP it is
//!   a failure of that upstream.
//! - Upstreams are tried in the order given, within one overall deadline
//!   (the timeout, 2 s by default): each gets an equal share of what is
//!   left, so one that is unreachable (ICMP refused) or silent hands over
//!   to the next. When none answers: [`ForwardError`], which the server
//!   turns into SERVFAIL. An upstream's own answer (NXDOMAIN, SERVFAIL,
//!   REFUSED…) is passed on as it is.
//! - At most [`MAX_FORWARDS`] forwards are in flight; a query above that
//!   is answered SERVFAIL at once (no queue, no unbounded memory).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_server::proto::op::{Edns, Message, MessageType, Query};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Default time allowed to the upstreams for one query.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Forwards in flight at once, over every client.
pub const MAX_FORWARDS: usize = 256;
/// The UDP buffer advertised to upstreams (the DNS flag day 2020 value:
/// no IP fragmentation).
pub const UPSTREAM_PAYLOAD: u16 = 1232;

/// Why a query could not be forwarded (the client gets SERVFAIL).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("{MAX_FORWARDS} forwards already in flight")]
    Busy,
    #[error("no upstream answered within {0:?}")]
    Timeout(Duration),
    #[error("upstream {upstream}: {error}")]
    Upstream { upstream: SocketAddr, error: String },
    #[error("cannot encode the query: {0}")]
    Encode(String),
}

/// The upstreams and the bound on forwards in flight.
#[derive(Debug)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    permits: Semaphore,
}

/// How the client asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Forwarder {
    /// `None` without upstreams (names outside the zone are refused).
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Option<Forwarder> {
        if upstreams.is_empty() {
            return None;
        }
        Some(Forwarder {
            upstreams,
            timeout,
            permits: Semaphore::new(MAX_FORWARDS),
        })
    }

    /// Asks the upstreams `query` the way the client asked (`rd`, `cd`:
    /// the client's recursion-desired and checking-disabled bits). The
    /// answer is the upstream's message, validated against the query.
    pub async fn forward(
        &self,
        query: &Query,
        rd: bool,
        cd: bool,
        transport: Transport,
    ) -> Result<Message, ForwardError> {
        let _permit = self.permits.try_acquire().map_err(|_| ForwardError::Busy)?;
        let deadline = Instant::now() + self.timeout;
        let n = self.upstreams.len();
        let mut last = ForwardError::Timeout(self.timeout);
        for (i, &up) in self.upstreams.iter().enumerate() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let share = (deadline - now) / u32::try_from(n - i).unwrap_or(u32::MAX);
            match tokio::time::timeout(share, ask(up, query, rd, cd, transport)).await {
                Ok(Ok(m)) => return Ok(m),
                Ok(Err(error)) => {
                    tracing::debug!(upstream = %up, %error, "DNS upstream failed");
                    last = ForwardError::Upstream {
                        upstream: up,
                        error,
                    };
                }
                Err(_) => {
                    tracing::debug!(upstream = %up, ?share, "DNS upstream did not answer in time");
                    last = ForwardError::Timeout(self.timeout);
                }
            }
        }
        Err(last)
    }
}

/// One upstream: over UDP (then TCP if truncated) or over TCP.
async fn ask(
    up: SocketAddr,
    query: &Query,
    rd: bool,
    cd: bool,
    transport: Transport,
) -> Result<Message, String> {
    let mut m = Message::query();
    m.metadata.recursion_desired = rd;
    m.metadata.checking_disabled = cd;
    m.add_query(query.clone());
    let mut e = Edns::new();
    e.set_max_payload(UPSTREAM_PAYLOAD);
    e.set_version(0);
    m.set_edns(e);
    let id = m.metadata.id;
    let bytes = m.to_vec().map_err(|e| format!("encoding the query: {e}"))?;
    if transport == Transport::Udp {
        let answer = udp(up, &bytes, id, query).await?;
        if !answer.metadata.truncation {
            return Ok(answer);
        }
        tracing::debug!(upstream = %up, "truncated UDP answer; asking over TCP");
    }
    tcp(up, &bytes, id, query).await
}

/// Whether `m` is the answer to the query `id` asking `q`.
pub fn is_answer_to(m: &Message, id: u16, q: &Query) -> bool {
    m.metadata.id == id
        && m.metadata.message_type == MessageType::Response
        && m.queries.len() == 1
        && m.queries[0].name() == q.name()
        && m.queries[0].query_type() == q.query_type()
        && m.queries[0].query_class() == q.query_class()
}

async fn udp(up: SocketAddr, bytes: &[u8], id: u16, q: &Query) -> Result<Message, String> {
    let local: SocketAddr = match up {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("udp socket: {e}"))?;
    // Connected: datagrams from other addresses are not delivered, and an
    // ICMP port unreachable surfaces as an error.
    sock.connect(up)
        .await
        .map_err(|e| format!("udp connect: {e}"))?;
    sock.send(bytes)
        .await
        .map_err(|e| format!("udp send: {e}"))?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = sock.recv(&mut buf).await.map_err(|e| format!("udp: {e}"))?;
        match Message::from_vec(&buf[..n]) {
            Ok(m) if is_answer_to(&m, id, q) => return Ok(m),
            Ok(m) => tracing::debug!(upstream = %up, got = m.metadata.id, want = id,
                "ignoring a UDP message that does not answer the query"),
            Err(e) => {
                tracing::debug!(upstream = %up, error = %e, "ignoring a malformed UDP message")
            }
        }
    }
}

async fn tcp(up: SocketAddr, bytes: &[u8], id: u16, q: &Query) -> Result<Message, String> {
    let len = u16::try_from(bytes.len()).map_err(|_| "query too long".to_string())?;
    let mut s = TcpStream::connect(up)
        .await
        .map_err(|e| format!("tcp connect: {e}"))?;
    let _ = s.set_nodelay(true);
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    s.write_all(&out)
        .await
        .map_err(|e| format!("tcp send: {e}"))?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)
        .await
        .map_err(|e| format!("tcp read: {e}"))?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf)
        .await
        .map_err(|e| format!("tcp read: {e}"))?;
    let m = Message::from_vec(&buf).map_err(|e| format!("malformed answer over tcp: {e}"))?;
    if !is_answer_to(&m, id, q) {
        return Err(format!(
            "the answer over tcp (id {}) does not match the query (id {id})",
            m.metadata.id
        ));
    }
    Ok(m)
}

/// Parses `--dns-upstream` values: `IP`, `IP:PORT`, `[IPv6]:PORT`, or a
/// comma-separated list of them; the port defaults to 53.
pub fn parse_upstreams(values: &[String]) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for v in values {
        for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            out.push(parse_upstream(item)?);
        }
    }
    Ok(out)
}

fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        if a.port() == 0 {
            return Err(format!("DNS upstream {s:?}: port 0"));
        }
        return Ok(a);
    }
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    let bare = s.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<Ipv6Addr>() {
        return Ok(SocketAddr::new(ip.into(), 53));
    }
    Err(format!(
        "DNS upstream {s:?}: give an IP address with an optional port (1.1.1.1, 10.0.0.2:5353, [2001:db8::1]:53)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_parse_with_default_port_lists_and_ipv6() {
        let v = parse_upstreams(&[
            "1.1.1.1".into(),
            "10.0.0.2:5353, [2001:db8::1]:54".into(),
            "2001:db8::2".into(),
            "[2001:db8::3]".into(),
        ])
        .unwrap();
        let want: Vec<SocketAddr> = [
            "1.1.1.1:53",
            "10.0.0.2:5353",
            "[2001:db8::1]:54",
            "[2001:db8::2]:53",
            "[2001:db8::3]:53",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(v, want);
        for bad in ["dns.google", "1.1.1.1:0", "1.1.1.1:x", "300.1.1.1"] {
            let e = parse_upstreams(&[bad.into()]).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        assert!(parse_upstreams(&[]).unwrap().is_empty());
    }

    #[test]
    fn an_answer_must_match_the_id_and_the_question() {
        use hickory_server::proto::rr::{Name, RecordType};
        let q = Query::query(Name::from_ascii("Example.COM.").unwrap(), RecordType::A);
        let mut m = Message::response(7, hickory_server::proto::op::OpCode::Query);
        m.add_query(Query::query(
            Name::from_ascii("example.com.").unwrap(),
            RecordType::A,
        ));
        assert!(is_answer_to(&m, 7, &q), "names compare case-insensitively");
        assert!(!is_answer_to(&m, 8, &q), "another id");
        let aaaa = Query::query(Name::from_ascii("example.com.").unwrap(), RecordType::AAAA);
        assert!(!is_answer_to(&m, 7, &aaaa), "another type");
        let other = Query::query(Name::from_ascii("example.org.").unwrap(), RecordType::A);
        assert!(!is_answer_to(&m, 7, &other), "another name");
        m.metadata.message_type = MessageType::Query;
        assert!(!is_answer_to(&m, 7, &q), "a query is no answer");
        let mut none = Message::response(7, hickory_server::proto::op::OpCode::Query);
        assert!(!is_answer_to(&none, 7, &q), "no question");
        none.add_query(q.clone());
        none.add_query(q.clone());
        assert!(!is_answer_to(&none, 7, &q), "two questions");
    }
}
