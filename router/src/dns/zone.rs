//! The name table: every record of the zone, built from one [`View`], and
//! the answer to one question. Pure (no IO): host names that are not IP
//! literals come resolved from the caller's cache.
//!
//! For an app `/demo/web` in zone `agora`:
//! - `web.demo.agora` — A / AAAA: the addresses of its serving instances
//!   (every port's, without duplicates; draining ones are not served). The
//!   name exists as long as the app has a set, even with no serving
//!   instance (then NOERROR with no answer).
//! - `_<port name>._<proto>.web.demo.agora` (or `_<port index>…` for an
//!   unnamed port; one name per protocol of `tcp,udp`) — SRV priority 0,
//!   weight 1, the host port, target the instance's own name; the targets'
//!   addresses ride in the additional section.
//! - `<instance>.web.demo.agora` — A / AAAA of one instance (the SRV
//!   target): its task id made a DNS label (lowercase, other characters as
//!   `-`, at most 50 bytes) plus `-` and 8 hex digits of a hash of the task
//!   id, so two tasks never share a name.
//! - the apex `agora` has the SOA (serial: the view's version, truncated to
//!   32 bits; minimum and TTL: the configured TTL), which also rides in
//!   every negative answer. Names above an existing name (`demo.agora`)
//!   exist without records (NOERROR, empty), per RFC 8020.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use agora_core::endpoints::{EndpointSet, View, dns_name, srv_name};
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};

/// One answer, borrowing the zone's records.
#[derive(Debug, PartialEq)]
pub struct Answer<'z> {
    pub code: ResponseCode,
    /// In the zone (authoritative answer); false for refused names.
    pub authoritative: bool,
    pub answers: Vec<&'z Record>,
    /// The SOA, in the authority section of negative answers.
    pub soa: Option<&'z Record>,
    pub additionals: Vec<&'z Record>,
}

#[derive(Debug, Default)]
struct Node {
    records: Vec<Record>,
    /// For SRV owners: the targets' addresses.
    additionals: Vec<Record>,
}

/// Every name of the zone at one view version.
#[derive(Debug)]
pub struct Zone {
    origin: LowerName,
    soa: Record,
    nodes: HashMap<LowerName, Node>,
    /// Names that exist only because a longer name exists below them.
    empty_non_terminals: HashSet<LowerName>,
    version: u64,
}

/// The zone's origin from a domain such as `agora` or `agora.`.
pub fn origin(domain: &str) -> Result<Name, String> {
    let d = domain.trim_matches('.').to_ascii_lowercase();
    if d.is_empty() {
        return Err("the DNS domain is empty".into());
    }
    Name::from_ascii(format!("{d}.")).map_err(|e| format!("bad DNS domain {domain:?}: {e}"))
}

impl Zone {
    /// Builds the table from `view`. `resolved` maps host names (not IP
    /// literals) to their addresses; an endpoint whose host is neither an
    /// IP literal nor in `resolved` is skipped. Returns, with the zone, every
    /// host name (not an IP literal) of a serving endpoint, so that the
    /// caller can resolve the missing ones and build again.
    pub fn build(
        view: &View,
        origin: &Name,
        ttl: u32,
        resolved: &HashMap<String, Vec<IpAddr>>,
    ) -> (Zone, BTreeSet<String>) {
        let domain = origin.to_ascii();
        let domain = domain.trim_end_matches('.');
        let mut b = Builder {
            ttl,
            nodes: HashMap::new(),
            seen: HashSet::new(),
            hosts: BTreeSet::new(),
        };
        for set in view.sets() {
            if let Some(app) = dns_name(&set.key.app_id, domain) {
                b.add_set(set, &app, resolved);
            }
        }
        let soa = Record::from_rdata(
            origin.clone(),
            ttl,
            RData::SOA(SOA::new(
                Name::from_ascii("ns")
                    .and_then(|n| n.append_domain(origin))
                    .unwrap_or_else(|_| origin.clone()),
                Name::from_ascii("hostmaster")
                    .and_then(|n| n.append_domain(origin))
                    .unwrap_or_else(|_| origin.clone()),
                view.version() as u32,
                60,
                10,
                3600,
                ttl,
            )),
        );
        let origin_lower = LowerName::new(origin);
        b.nodes
            .entry(origin_lower.clone())
            .or_default()
            .records
            .push(soa.clone());
        // The SRV targets' addresses go with the SRV answers.
        let mut extra: Vec<(LowerName, Vec<Record>)> = Vec::new();
        for (name, node) in &b.nodes {
            let mut add = Vec::new();
            for r in &node.records {
                if let RData::SRV(srv) = &r.data
                    && let Some(t) = b.nodes.get(&LowerName::new(&srv.target))
                {
                    add.extend(t.records.iter().cloned());
                }
            }
            if !add.is_empty() {
                extra.push((name.clone(), add));
            }
        }
        for (name, add) in extra {
            if let Some(n) = b.nodes.get_mut(&name) {
                n.additionals = add;
            }
        }
        let mut empty_non_terminals = HashSet::new();
        for name in b.nodes.keys() {
            let mut up = name.base_name();
            while origin_lower.zone_of(&up) && up != origin_lower {
                if !b.nodes.contains_key(&up) {
                    empty_non_terminals.insert(up.clone());
                }
                up = up.base_name();
            }
        }
        let zone = Zone {
            origin: origin_lower,
            soa,
            nodes: b.nodes,
            empty_non_terminals,
            version: view.version(),
        };
        (zone, b.hosts)
    }

    /// The view version the zone was built from.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The answer to one question (class IN).
    pub fn lookup(&self, name: &LowerName, qtype: RecordType) -> Answer<'_> {
        if !self.origin.zone_of(name) {
            return Answer {
                code: ResponseCode::Refused,
                authoritative: false,
                answers: Vec::new(),
                soa: None,
                additionals: Vec::new(),
            };
        }
        let negative = |code| Answer {
            code,
            authoritative: true,
            answers: Vec::new(),
            soa: Some(&self.soa),
            additionals: Vec::new(),
        };
        let Some(node) = self.nodes.get(name) else {
            return if self.empty_non_terminals.contains(name) {
                negative(ResponseCode::NoError)
            } else {
                negative(ResponseCode::NXDomain)
            };
        };
        let answers: Vec<&Record> = node
            .records
            .iter()
            .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
            .collect();
        if answers.is_empty() {
            return negative(ResponseCode::NoError);
        }
        let additionals = if qtype == RecordType::SRV || qtype == RecordType::ANY {
            node.additionals.iter().collect()
        } else {
            Vec::new()
        };
        Answer {
            code: ResponseCode::NoError,
            authoritative: true,
            answers,
            soa: None,
            additionals,
        }
    }
}

struct Builder {
    ttl: u32,
    nodes: HashMap<LowerName, Node>,
    /// (owner, record) pairs already added, against duplicates.
    seen: HashSet<(LowerName, RData)>,
    hosts: BTreeSet<String>,
}

impl Builder {
    fn add(&mut self, owner: &Name, data: RData) {
        let key = LowerName::new(owner);
        let node = self.nodes.entry(key.clone()).or_default();
        if self.seen.insert((key, data.clone())) {
            node.records
                .push(Record::from_rdata(owner.clone(), self.ttl, data));
        }
    }

    fn add_set(&mut self, set: &EndpointSet, app: &str, resolved: &HashMap<String, Vec<IpAddr>>) {
        let Ok(app_name) = Name::from_ascii(format!("{app}.")) else {
            return;
        };
        // The app's name exists as long as it has a set.
        self.nodes.entry(LowerName::new(&app_name)).or_default();
        let protocols: Vec<String> = set
            .meta
            .protocol
            .split(',')
            .map(|p| p.trim().to_ascii_lowercase())
            .filter(|p| !p.is_empty())
            .collect();
        let protocols = if protocols.is_empty() {
            vec!["tcp".to_string()]
        } else {
            protocols
        };
        let mut srv_owners = Vec::new();
        for p in &protocols {
            let mut meta = set.meta.clone();
            meta.protocol = p.clone();
            match Name::from_ascii(format!("{}.", srv_name(app, &meta, set.key.port_index))) {
                Ok(n) => {
                    self.nodes.entry(LowerName::new(&n)).or_default();
                    srv_owners.push(n);
                }
                Err(e) => tracing::debug!(app, error = %e, "port has no SRV name"),
            }
        }
        for ep in set.serving() {
            let ips: Vec<IpAddr> = match ep.host.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => {
                    self.hosts.insert(ep.host.clone());
                    match resolved.get(&ep.host) {
                        Some(ips) => ips.clone(),
                        None => continue,
                    }
                }
            };
            let target = Name::from_ascii(instance_label(&ep.task_id))
                .and_then(|l| l.append_domain(&app_name));
            for ip in &ips {
                let data = match ip {
                    IpAddr::V4(v4) => RData::A(A(*v4)),
                    IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                };
                self.add(&app_name, data.clone());
                if let Ok(t) = &target {
                    self.add(t, data);
                }
            }
            let (Ok(target), Ok(port)) = (&target, u16::try_from(ep.port)) else {
                continue;
            };
            if ips.is_empty() || port == 0 {
                continue;
            }
            for owner in &srv_owners {
                self.add(owner, RData::SRV(SRV::new(0, 1, port, target.clone())));
            }
        }
    }
}

/// An instance's DNS label: its task id made a label, plus a hash of the
/// task id (see the module doc).
pub fn instance_label(task_id: &str) -> String {
    let mut s: String = task_id
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .take(50)
        .collect();
    s = s.trim_matches('-').to_string();
    // FNV-1a, 32 bits: stable across builds and versions.
    let mut h: u32 = 0x811c_9dc5;
    for b in task_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    if s.is_empty() {
        format!("t-{h:08x}")
    } else {
        format!("{s}-{h:08x}")
    }
}
