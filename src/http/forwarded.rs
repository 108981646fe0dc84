//! Who the client is, and the `X-Forwarded-*` / `Forwarded` headers passed upstream.
//!
//! A client's own `X-Forwarded-For` is believed only when the connection comes from a
//! configured trusted proxy; from anyone else the socket address is the client, so a
//! forged header cannot dodge `ip_hash` or per-client limits.

use std::fmt::Write as _;
use std::net::IpAddr;

use actix_web::http::header::{HeaderMap, HeaderName};
use bytes::{BufMut, Bytes, BytesMut};
use ipnet::IpNet;

const X_FORWARDED_FOR_NAME: &str = "x-forwarded-for";
const X_FORWARDED_PROTO_NAME: &str = "x-forwarded-proto";
const X_FORWARDED_HOST_NAME: &str = "x-forwarded-host";
const FORWARDED_NAME: &str = "forwarded";

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static(X_FORWARDED_FOR_NAME);
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static(X_FORWARDED_PROTO_NAME);
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static(X_FORWARDED_HOST_NAME);
pub const FORWARDED: HeaderName = HeaderName::from_static(FORWARDED_NAME);

/// The address ranges whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    ranges: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn new(ranges: Vec<IpNet>) -> Self {
        Self { ranges }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.ranges.iter().any(|range| range.contains(&ip))
    }

    /// The client's address: the socket peer, or — when the peer is a trusted proxy —
    /// the right-most address in the forwarding chain that is not itself trusted.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return canonical(peer);
        }
        let chain = forwarded_chain(headers);
        chain
            .iter()
            .rev()
            .find(|ip| !self.contains(**ip))
            .or(chain.first())
            .copied()
            .map_or(canonical(peer), canonical)
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The addresses of `X-Forwarded-For` (every header line, in order), or of
/// `Forwarded: for=` when there is no `X-Forwarded-For`. Unparsable entries are skipped.
fn forwarded_chain(headers: &HeaderMap) -> Vec<IpAddr> {
    let xff: Vec<IpAddr> = headers
        .get_all(X_FORWARDED_FOR)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|item| parse_node(item.trim()))
        .collect();
    if !xff.is_empty() {
        return xff;
    }
    headers
        .get_all(FORWARDED)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                key.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_node(value.trim().trim_matches('"')))?
            })
        })
        .collect()
}

/// `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]`, `[::1]:80`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    node.rsplit_once(':')?.0.parse().ok()
}

/// The forwarding headers sent upstream for one request, as the bytes of their values.
#[derive(Debug, PartialEq, Eq)]
pub struct ForwardingHeaders {
    pub x_forwarded_for: Bytes,
    pub x_forwarded_proto: Bytes,
    pub x_forwarded_host: Bytes,
    pub forwarded: Bytes,
}

/// The same header names as the upstream request (hyper's `http` types) spells them.
mod upstream {
    use http::HeaderName;

    pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static(super::X_FORWARDED_FOR_NAME);
    pub const X_FORWARDED_PROTO: HeaderName =
        HeaderName::from_static(super::X_FORWARDED_PROTO_NAME);
    pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static(super::X_FORWARDED_HOST_NAME);
    pub const FORWARDED: HeaderName = HeaderName::from_static(super::FORWARDED_NAME);
}

impl ForwardingHeaders {
    /// Extends a trusted proxy's chain with `peer`, or starts a fresh one when the peer
    /// is not trusted (its claims are dropped). `host` is the value sent as `Host`; the
    /// values are written into `buffer` and split off it, so they share its allocation.
    pub fn new(
        trusted: &TrustedProxies,
        peer: IpAddr,
        incoming: &HeaderMap,
        scheme: &'static str,
        host: &Bytes,
        buffer: &mut BytesMut,
    ) -> Self {
        let peer = canonical(peer);
        let believed = trusted.contains(peer);
        let claimed = |name: &HeaderName| believed_values(incoming, name, believed);

        for chain in claimed(&X_FORWARDED_FOR) {
            buffer.put_slice(chain.as_bytes());
            buffer.put_slice(b", ");
        }
        put_ip(buffer, peer);
        let x_forwarded_for = buffer.split().freeze();

        let mut first_claim = |name: &HeaderName| {
            claimed(name).next().map(|value| {
                let first = value.split(',').next().unwrap_or_default().trim();
                buffer.put_slice(first.as_bytes());
                buffer.split().freeze()
            })
        };
        let x_forwarded_proto = first_claim(&X_FORWARDED_PROTO)
            .unwrap_or_else(|| Bytes::from_static(scheme.as_bytes()));
        let x_forwarded_host = first_claim(&X_FORWARDED_HOST).unwrap_or_else(|| host.clone());

        for chain in claimed(&FORWARDED) {
            buffer.put_slice(chain.as_bytes());
            buffer.put_slice(b", ");
        }
        buffer.put_slice(b"for=");
        match peer {
            IpAddr::V4(_) => put_ip(buffer, peer),
            IpAddr::V6(_) => {
                buffer.put_slice(b"\"[");
                put_ip(buffer, peer);
                buffer.put_slice(b"]\"");
            }
        }
        buffer.put_slice(b";host=");
        put_quoted_if_needed(buffer, host);
        buffer.put_slice(b";proto=");
        buffer.put_slice(scheme.as_bytes());
        let forwarded = buffer.split().freeze();
        Self {
            x_forwarded_for,
            x_forwarded_proto,
            x_forwarded_host,
            forwarded,
        }
    }

    /// Replaces any forwarding headers in `headers` with these.
    pub fn apply(self, headers: &mut http::HeaderMap) {
        for (name, value) in [
            (upstream::X_FORWARDED_FOR, self.x_forwarded_for),
            (upstream::X_FORWARDED_PROTO, self.x_forwarded_proto),
            (upstream::X_FORWARDED_HOST, self.x_forwarded_host),
            (upstream::FORWARDED, self.forwarded),
        ] {
            match http::HeaderValue::from_maybe_shared(value) {
                Ok(value) => {
                    headers.insert(name, value);
                }
                Err(_) => {
                    headers.remove(name);
                }
            }
        }
    }
}

/// Whether `name` is one of the forwarding headers [`ForwardingHeaders`] replaces.
pub fn is_forwarding_header(name: &str) -> bool {
    matches!(
        name,
        X_FORWARDED_FOR_NAME | X_FORWARDED_PROTO_NAME | X_FORWARDED_HOST_NAME | FORWARDED_NAME
    )
}

/// The values of `name` a client claims, when they are believed.
fn believed_values<'a>(
    incoming: &'a HeaderMap,
    name: &HeaderName,
    believed: bool,
) -> impl Iterator<Item = &'a str> {
    believed
        .then(|| incoming.get_all(name))
        .into_iter()
        .flatten()
        .filter_map(|value| value.to_str().ok())
}

/// Writes `ip` without `core::fmt`, whose padding support makes an IPv4 address cost
/// more than the rest of the forwarding headers together.
fn put_ip(buffer: &mut BytesMut, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (position, octet) in v4.octets().into_iter().enumerate() {
                if position > 0 {
                    buffer.put_u8(b'.');
                }
                buffer.put_slice(digits.format(octet).as_bytes());
            }
        }
        IpAddr::V6(v6) => {
            // Writing into a BytesMut cannot fail.
            let _ = write!(buffer, "{v6}");
        }
    }
}

/// RFC 7239 values that are not tokens (a host with a port has a colon) are quoted.
fn put_quoted_if_needed(buffer: &mut BytesMut, value: &[u8]) {
    if value
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(b))
    {
        buffer.put_slice(value);
    } else {
        buffer.put_u8(b'"');
        for &byte in value.iter().filter(|&&b| b != b'"' && b != b'\\') {
            buffer.put_u8(byte);
        }
        buffer.put_u8(b'"');
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append((*name).clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn forwarding(
        trusted: &TrustedProxies,
        peer: IpAddr,
        incoming: &HeaderMap,
        scheme: &'static str,
        host: &'static str,
    ) -> ForwardingHeaders {
        let host = Bytes::from_static(host.as_bytes());
        ForwardingHeaders::new(trusted, peer, incoming, scheme, &host, &mut BytesMut::new())
    }

    fn trusted(ranges: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            ranges
                .iter()
                .map(|r| {
                    r.parse()
                        .unwrap_or_else(|_| IpNet::from(r.parse::<IpAddr>().unwrap()))
                })
                .collect(),
        )
    }

    #[test]
    fn forged_headers_from_untrusted_peers_are_ignored() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let forged = headers(&[(&X_FORWARDED_FOR, "1.1.1.1")]);
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(proxies.client_ip(peer, &forged), peer);
        let sent = forwarding(&proxies, peer, &forged, "http", "example.com");
        assert_eq!(sent.x_forwarded_for, "203.0.113.9");
        assert_eq!(
            sent.forwarded,
            "for=203.0.113.9;host=example.com;proto=http"
        );
    }

    #[test]
    fn trusted_peers_extend_the_chain_and_name_the_client() {
        let proxies = trusted(&["10.0.0.0/8", "127.0.0.1"]);
        let incoming = headers(&[
            (&X_FORWARDED_FOR, "198.51.100.7, 10.1.1.1"),
            (&X_FORWARDED_PROTO, "https"),
        ]);
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            proxies.client_ip(peer, &incoming),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let sent = forwarding(&proxies, peer, &incoming, "http", "example.com:8080");
        assert_eq!(sent.x_forwarded_for, "198.51.100.7, 10.1.1.1, 127.0.0.1");
        assert_eq!(sent.x_forwarded_proto, "https");
        assert_eq!(
            sent.forwarded,
            "for=127.0.0.1;host=\"example.com:8080\";proto=http"
        );
    }

    #[test]
    fn a_client_inside_a_forged_chain_cannot_pick_its_address() {
        // The trusted proxy appended the real client (198.51.100.7) after what the
        // client claimed; the right-most untrusted entry wins.
        let proxies = trusted(&["10.0.0.0/8"]);
        let incoming = headers(&[(&X_FORWARDED_FOR, "1.2.3.4, 198.51.100.7")]);
        assert_eq!(
            proxies.client_ip("10.0.0.2".parse().unwrap(), &incoming),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn forwarded_for_is_read_when_there_is_no_x_forwarded_for() {
        let proxies = trusted(&["::1"]);
        let incoming = headers(&[(&FORWARDED, "for=\"[2001:db8::17]:4711\";proto=https")]);
        assert_eq!(
            proxies.client_ip("::1".parse().unwrap(), &incoming),
            "2001:db8::17".parse::<IpAddr>().unwrap()
        );
        let sent = forwarding(&proxies, "::1".parse().unwrap(), &incoming, "https", "h");
        assert_eq!(
            sent.forwarded,
            "for=\"[2001:db8::17]:4711\";proto=https, for=\"[::1]\";host=h;proto=https"
        );
    }

    #[test]
    fn ipv4_mapped_peers_count_as_ipv4() {
        let proxies = trusted(&["127.0.0.0/8"]);
        assert!(proxies.contains("::ffff:127.0.0.1".parse().unwrap()));
    }
}
