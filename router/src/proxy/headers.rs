//! Header handling between client and backend: hop-by-hop headers removed,
//! forwarding headers set, Host preserved.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};

/// Headers meaningful for one connection only (RFC 9110 7.6.1), besides
/// those the `Connection` header names.
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Whether the request asks for a protocol upgrade (HTTP/1.1 `Upgrade`
/// with `Connection: upgrade`, e.g. WebSocket).
pub(crate) fn wants_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_has(req.headers(), "upgrade")
}

fn connection_has(h: &HeaderMap, token: &str) -> bool {
    h.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Removes hop-by-hop headers; with `keep_upgrade`, `Upgrade` and
/// `Connection: upgrade` stay (the upgrade is passed through).
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // Most requests carry none: one pass over the names decides, no
    // lookup per hop-by-hop name.
    if !keep_upgrade && !h.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    if h.contains_key(header::CONNECTION) {
        // Headers the Connection header names are hop-by-hop too
        // (`keep-alive` and `upgrade` name ones removed below anyway).
        let mut named: Vec<HeaderName> = Vec::new();
        for t in h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .map(str::trim)
        {
            if t.is_empty()
                || t.eq_ignore_ascii_case("keep-alive")
                || t.eq_ignore_ascii_case("upgrade")
            {
                continue;
            }
            if let Ok(n) = HeaderName::from_bytes(t.as_bytes()) {
                named.push(n);
            }
        }
        for n in named {
            h.remove(n);
        }
    }
    for n in &HOP_BY_HOP {
        if keep_upgrade && (n == header::UPGRADE || n == header::CONNECTION) {
            continue;
        }
        h.remove(n);
    }
    if keep_upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The request's host as the client gave it: the URI's authority
/// (absolute form, HTTP/2) or the Host header. A header parsed by hyper is
/// shared, not copied.
pub(crate) fn request_host<B>(req: &Request<B>) -> Option<HeaderValue> {
    match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers().get(header::HOST).cloned(),
    }
}

/// The host part of an authority (no port, no user info), IPv6 brackets kept.
pub(crate) fn host_only(authority: &str) -> &str {
    let a = authority.rsplit('@').next().unwrap_or(authority);
    if a.starts_with('[') {
        return match a.find(']') {
            Some(i) => &a[..=i],
            None => a,
        };
    }
    match a.rfind(':') {
        Some(i) => &a[..i],
        None => a,
    }
}

/// Prepares a client request for an HTTP/1.1 backend: origin-form URI,
/// HTTP/1.1, Host kept (or set from the HTTP/2 authority), hop-by-hop
/// headers removed, `X-Forwarded-For` appended, `-Proto` and `-Host` set.
pub(crate) fn to_backend<B>(
    req: &mut Request<B>,
    host: HeaderValue,
    peer_ip: &HeaderValue,
    proto: &HeaderValue,
    upgrade: bool,
) {
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        if let Ok(u) = pq.parse::<Uri>() {
            *req.uri_mut() = u;
        }
    }
    *req.version_mut() = Version::HTTP_11;
    let h = req.headers_mut();
    strip_hop_by_hop(h, upgrade);
    h.remove(header::EXPECT);
    match h.get(&X_FORWARDED_FOR) {
        Some(prev) => {
            let mut v = Vec::with_capacity(prev.len() + 2 + peer_ip.len());
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(peer_ip.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&v) {
                h.insert(X_FORWARDED_FOR, v);
            }
        }
        None => {
            h.insert(X_FORWARDED_FOR, peer_ip.clone());
        }
    }
    h.insert(X_FORWARDED_PROTO, proto.clone());
    h.insert(X_FORWARDED_HOST, host.clone());
    h.insert(header::HOST, host);
}

/// Prepares a backend response for the client: hop-by-hop headers removed
/// (kept for a `101 Switching Protocols`).
pub(crate) fn to_client<B>(resp: &mut Response<B>) {
    let upgrade = resp.status() == http::StatusCode::SWITCHING_PROTOCOLS;
    strip_hop_by_hop(resp.headers_mut(), upgrade);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_only_strips_port_and_user() {
        assert_eq!(host_only("web.demo.agora:8000"), "web.demo.agora");
        assert_eq!(host_only("web.demo.agora"), "web.demo.agora");
        assert_eq!(host_only("[::1]:80"), "[::1]");
        assert_eq!(host_only("u:p@h:1"), "h");
    }

    #[test]
    fn connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forwarding_headers_append_and_set() {
        let mut req = Request::builder()
            .uri("http://shop.example.com/a?b=1")
            .version(Version::HTTP_2)
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-forwarded-proto", "https")
            .body(())
            .unwrap();
        let host = HeaderValue::from_static("shop.example.com");
        let peer = HeaderValue::from_static("127.0.0.9");
        let proto = HeaderValue::from_static("http");
        to_backend(&mut req, host, &peer, &proto, false);
        assert_eq!(req.uri(), "/a?b=1");
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["host"], "shop.example.com");
        assert_eq!(req.headers()["x-forwarded-for"], "10.0.0.1, 127.0.0.9");
        assert_eq!(req.headers()["x-forwarded-proto"], "http");
        assert_eq!(req.headers()["x-forwarded-host"], "shop.example.com");
    }
}
