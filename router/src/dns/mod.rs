//! The authoritative DNS server of the cluster's zone (`agora.` by
//! default), on UDP and TCP, answering from the latest endpoint view.
//!
//! - One task follows the view channel: on every change it builds a new
//!   [`Zone`] and swaps it in (a `watch` channel: queries clone an `Arc`
//!   under a short lock, never held across an await, so a rebuild never
//!   waits for a query nor a query for a rebuild).
//! - Until the first real view arrives (the channel reports no change yet)
//!   every query in the zone is answered SERVFAIL: the server does not know,
//!   and NXDOMAIN would be cached as a lie. After that the last view stays
//!   served even while the feed reconnects.
//! - Host names that are not IP literals are resolved by the system
//!   resolver beside the rebuilds (never delaying the next view): the zone
//!   is swapped first without them, then again once they resolved (at most
//!   [`RESOLVE_TIMEOUT`]); a result is used for [`RESOLVED_FOR`], then
//!   resolved again on the next change (the old one serving meanwhile); a
//!   host that does not resolve is skipped (logged).
//! - Names outside the zone: REFUSED, or, with upstreams configured
//!   (`--dns-upstream`), forwarded to them ([`forward`]): the upstream's
//!   answer is passed on with the client's id; no upstream answering within
//!   the timeout (or all unreachable) is SERVFAIL. A name inside the zone is
//!   never forwarded (an unknown one is NXDOMAIN). Zone transfers of other
//!   zones are refused. Opcodes other than QUERY: NOTIMP. Classes other
//!   than IN: REFUSED. A UDP answer larger than the client's buffer is
//!   truncated (TC set) and complete over TCP.

pub mod forward;
pub mod zone;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_core::endpoints::View;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo, Server};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use forward::{DEFAULT_UPSTREAM_TIMEOUT, Forwarder, Transport};
pub use zone::Zone;

/// How long one resolution of an agent's host name may take.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a resolved host name is used before it is resolved again.
pub const RESOLVED_FOR: Duration = Duration::from_secs(30);
/// A TCP client that sends nothing for this long is disconnected.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// The zone, its records' TTL, and where other names go.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// The zone's origin, e.g. `agora.`.
    pub origin: Name,
    /// TTL of every record, in seconds (also the SOA minimum: how long a
    /// negative answer may be cached).
    pub ttl: u32,
    /// Resolvers that names outside the zone are forwarded to, in order;
    /// empty: such names are refused.
    pub upstreams: Vec<SocketAddr>,
    /// Time the upstreams get for one query (then SERVFAIL).
    pub upstream_timeout: Duration,
}

impl DnsConfig {
    /// `domain` such as `agora`; `ttl` rounded down to whole seconds; no
    /// upstream.
    pub fn new(domain: &str, ttl: Duration) -> Result<DnsConfig, DnsError> {
        Ok(DnsConfig {
            origin: zone::origin(domain).map_err(DnsError::Config)?,
            ttl: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX),
            upstreams: Vec::new(),
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
        })
    }

    /// Forwards names outside the zone to `upstreams` (tried in order,
    /// within `timeout` for one query).
    pub fn with_upstreams(mut self, upstreams: Vec<SocketAddr>, timeout: Duration) -> DnsConfig {
        self.upstreams = upstreams;
        self.upstream_timeout = timeout;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("{0}")]
    Config(String),
    #[error("DNS server: {0}")]
    Server(String),
}

/// The current zone; `None` until the first view arrived.
type Current = watch::Receiver<Option<Arc<Zone>>>;

struct Handler {
    origin: hickory_server::proto::rr::LowerName,
    zone: Current,
    forwarder: Option<Forwarder>,
}

/// Serves the zone on `udp` and `tcp` from the views on `views` until
/// `shutdown` resolves.
pub async fn serve(
    udp: UdpSocket,
    tcp: TcpListener,
    cfg: DnsConfig,
    views: watch::Receiver<Arc<View>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DnsError> {
    let (zone_tx, zone_rx) = watch::channel(None);
    let origin = hickory_server::proto::rr::LowerName::new(&cfg.origin);
    let forwarder = Forwarder::new(cfg.upstreams.clone(), cfg.upstream_timeout);
    let follower = tokio::spawn(follow(cfg, views, zone_tx));
    let _abort = AbortOnDrop(follower);
    let mut server = Server::new(Handler {
        origin,
        zone: zone_rx,
        forwarder,
    });
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE, 64);
    tokio::select! {
        r = server.block_until_done() => r.map_err(|e| DnsError::Server(e.to_string())),
        () = shutdown => server
            .shutdown_gracefully()
            .await
            .map_err(|e| DnsError::Server(e.to_string())),
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Rebuilds the zone on every view change, and again when host names it
/// needs have been resolved (resolution runs beside, never delaying the
/// next view).
async fn follow(
    cfg: DnsConfig,
    mut views: watch::Receiver<Arc<View>>,
    zone: watch::Sender<Option<Arc<Zone>>>,
) {
    let mut cache: HashMap<String, (Vec<IpAddr>, Instant)> = HashMap::new();
    let mut resolving: JoinSet<(String, Vec<IpAddr>)> = JoinSet::new();
    let mut in_flight: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            r = views.changed() => if r.is_err() { return },
            Some(done) = resolving.join_next(), if !resolving.is_empty() => {
                let Ok((host, ips)) = done else { continue };
                in_flight.remove(&host);
                if ips.is_empty() {
                    tracing::warn!(%host, "agent host name does not resolve: its endpoints are left out of DNS");
                }
                // A failure is kept too (tried again after RESOLVED_FOR).
                cache.insert(host, (ips, Instant::now()));
            }
        }
        let view = views.borrow_and_update().clone();
        let resolved: HashMap<String, Vec<IpAddr>> = cache
            .iter()
            .map(|(h, (ips, _))| (h.clone(), ips.clone()))
            .collect();
        let (z, hosts) = Zone::build(&view, &cfg.origin, cfg.ttl, &resolved);
        tracing::debug!(version = z.version(), "DNS zone rebuilt");
        zone.send_replace(Some(Arc::new(z)));
        // Resolve what is missing or old; forget what is no longer used
        // (stale results keep serving until the fresh ones are in).
        cache.retain(|h, _| hosts.contains(h));
        let now = Instant::now();
        for host in hosts {
            let fresh = cache
                .get(&host)
                .is_some_and(|(_, at)| now.duration_since(*at) < RESOLVED_FOR);
            if !fresh && in_flight.insert(host.clone()) {
                resolving.spawn(async move {
                    let ips = resolve(&host).await;
                    (host, ips)
                });
            }
        }
    }
}

async fn resolve(host: &str) -> Vec<IpAddr> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, 0))).await {
        Ok(Ok(addrs)) => {
            let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
            ips.sort();
            ips.dedup();
            ips
        }
        _ => Vec::new(),
    }
}

/// The largest UDP answer served (RFC 9715's advice, the DNS flag day's
/// 1232 bytes).
pub const UDP_PAYLOAD_MAX: u16 = 1232;

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            // At most 1232 bytes over UDP whatever the client claims (the
            // DNS flag day's size): a spoofed query cannot turn a big
            // answer into a big reflection; larger answers are truncated
            // (TC) and the client asks again over TCP.
            e.set_max_payload(req.max_payload().clamp(512, UDP_PAYLOAD_MAX));
            e.set_version(0);
            e
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let fail = |code: ResponseCode| {
            let mut m = Metadata::response_from_request(&request.metadata);
            m.response_code = code;
            m
        };
        let (zone, info) = match check(request) {
            Err(code) => {
                let resp = builder.build_no_records(fail(code));
                return sent(response.send_response(resp).await, request);
            }
            Ok(info) if !self.origin.zone_of(info.0) => {
                // Outside the zone: forwarded, or refused.
                let (code, forwarded) = match &self.forwarder {
                    None => (ResponseCode::Refused, None),
                    Some(_) if matches!(info.1, RecordType::AXFR | RecordType::IXFR) => {
                        (ResponseCode::Refused, None)
                    }
                    Some(f) => match forward_request(f, request).await {
                        Ok(m) => (m.metadata.response_code, Some(m)),
                        Err(error) => {
                            tracing::debug!(%error, name = %info.0, "DNS forward failed: SERVFAIL");
                            (ResponseCode::ServFail, None)
                        }
                    },
                };
                let Some(up) = forwarded else {
                    let resp = builder.build_no_records(fail(code));
                    return sent(response.send_response(resp).await, request);
                };
                let mut m = fail(code);
                m.recursion_available = up.metadata.recursion_available;
                m.authoritative = up.metadata.authoritative;
                let resp = builder.build(
                    m,
                    up.answers.iter(),
                    up.authorities.iter(),
                    std::iter::empty::<&Record>(),
                    up.additionals.iter(),
                );
                return sent(response.send_response(resp).await, request);
            }
            Ok(info) => (self.zone.borrow().clone(), info),
        };
        let Some(zone) = zone else {
            // In the zone, before the first view: the server does not know.
            let resp = builder.build_no_records(fail(ResponseCode::ServFail));
            return sent(response.send_response(resp).await, request);
        };
        let mut a = zone.lookup(info.0, info.1);
        // Rotate the records from one query to the next: resolvers that
        // take the first address spread over the instances.
        if a.answers.len() > 1 {
            let n = usize::from(request.metadata.id) % a.answers.len();
            a.answers.rotate_left(n);
        }
        let mut m = fail(a.code);
        m.authoritative = a.authoritative;
        let resp = builder.build(
            m,
            a.answers,
            std::iter::empty::<&Record>(),
            a.soa,
            a.additionals,
        );
        sent(response.send_response(resp).await, request)
    }
}

/// Forwards the request's one question the way the client asked it.
async fn forward_request(
    f: &Forwarder,
    request: &Request,
) -> Result<hickory_server::proto::op::Message, forward::ForwardError> {
    let info = request
        .request_info()
        .map_err(|e| forward::ForwardError::Encode(e.to_string()))?;
    let transport = match request.protocol() {
        Protocol::Udp => Transport::Udp,
        _ => Transport::Tcp,
    };
    f.forward(
        info.query.original(),
        request.metadata.recursion_desired,
        request.metadata.checking_disabled,
        transport,
    )
    .await
}

type Question<'r> = (
    &'r hickory_server::proto::rr::LowerName,
    hickory_server::proto::rr::RecordType,
);

/// The one question of a standard query, or the error to answer.
fn check(request: &Request) -> Result<Question<'_>, ResponseCode> {
    if request.metadata.message_type != MessageType::Query {
        return Err(ResponseCode::FormErr);
    }
    if request.metadata.op_code != OpCode::Query {
        return Err(ResponseCode::NotImp);
    }
    let info = request.request_info().map_err(|_| ResponseCode::FormErr)?;
    if info.query.query_class() != DNSClass::IN {
        return Err(ResponseCode::Refused);
    }
    Ok((info.query.name(), info.query.query_type()))
}

fn sent(r: Result<ResponseInfo, impl std::fmt::Display>, request: &Request) -> ResponseInfo {
    match r {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, src = %request.src(), "DNS answer not sent");
            let mut m = Metadata::response_from_request(&request.metadata);
            m.response_code = ResponseCode::ServFail;
            ResponseInfo::from(hickory_server::proto::op::Header {
                metadata: m,
                counts: Default::default(),
            })
        }
    }
}
