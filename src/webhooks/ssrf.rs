//! The guard against server-side request forgery: a webhook URL must not reach the
//! instance itself, the private network, or a cloud metadata service, unless the
//! operator admitted the host or address in `webhooks.allow`.
//!
//! The check happens where the connection is made: names are resolved by
//! [`GuardedResolver`], the HTTP client's only resolver, which hands the client only
//! addresses it checked; so a name that resolves to a public address when checked and to
//! a private one when connecting (DNS rebinding) cannot slip through. URLs naming an
//! address directly never reach a resolver and are checked by [`AddressPolicy::check_url`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Which destinations are admitted.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    /// Host names admitted whatever they resolve to (lowercase).
    hosts: Vec<String>,
    /// Addresses and networks admitted although they are not public.
    networks: Vec<IpNet>,
}

/// Why a destination was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused by the SSRF guard: {0}")]
pub struct Refused(pub String);

impl AddressPolicy {
    /// Each entry is a host name, an address, or a network in CIDR notation.
    pub fn new(allow: &[String]) -> Self {
        let mut policy = Self::default();
        for entry in allow {
            let entry = entry.trim().trim_start_matches('[').trim_end_matches(']');
            if let Ok(net) = entry.parse::<IpNet>() {
                policy.networks.push(net);
            } else if let Ok(ip) = entry.parse::<IpAddr>() {
                policy.networks.push(IpNet::from(ip));
            } else {
                policy.hosts.push(entry.to_ascii_lowercase());
            }
        }
        policy
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.contains(&host)
    }

    /// Whether a connection to `ip` is admitted.
    pub fn address_allowed(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        !is_internal(ip) || self.networks.iter().any(|net| net.contains(&ip))
    }

    /// Checks a URL before it is requested: scheme, and the address when the host is
    /// one (names are checked when they are resolved).
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused(format!("scheme {} is not http(s)", url.scheme())));
        }
        match url.host() {
            None => Err(Refused("the URL has no host".into())),
            Some(url::Host::Ipv4(ip)) => self.check_ip(None, IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check_ip(None, IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => Ok(()),
        }
    }

    fn check_ip(&self, host: Option<&str>, ip: IpAddr) -> Result<(), Refused> {
        if self.address_allowed(ip) || host.is_some_and(|host| self.host_allowed(host)) {
            Ok(())
        } else {
            Err(Refused(match host {
                Some(host) => format!("{host} resolves to {ip}, which is not a public address"),
                None => format!("{ip} is not a public address"),
            }))
        }
    }

    /// The addresses of `host` this policy admits; an error when it admits none.
    pub async fn resolve(&self, host: &str) -> Result<Vec<SocketAddr>, Refused> {
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
            .await
            .map_err(|err| Refused(format!("cannot resolve {host}: {err}")))?
            .collect();
        let mut refused = None;
        let admitted: Vec<SocketAddr> = resolved
            .into_iter()
            .filter(|addr| match self.check_ip(Some(host), addr.ip()) {
                Ok(()) => true,
                Err(err) => {
                    refused = Some(err);
                    false
                }
            })
            .collect();
        if admitted.is_empty() {
            return Err(refused.unwrap_or_else(|| Refused(format!("{host} has no address"))));
        }
        Ok(admitted)
    }
}

/// IPv4 addresses written as IPv6 (`::ffff:a.b.c.d`, and the NAT64 prefix
/// `64:ff9b::/96`) are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let segments = v6.segments();
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b, c, d] = v6.octets()[12..] else {
                    unreachable!("an IPv6 address has 16 octets")
                };
                return IpAddr::V4(Ipv4Addr::new(a, b, c, d));
            }
            IpAddr::V6(v6)
        }
        v4 => v4,
    }
}

/// Whether `ip` is anything but a public unicast address: loopback, private, shared
/// (CGNAT), link-local (where cloud metadata services live), unspecified, broadcast,
/// multicast, documentation, benchmarking or reserved.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || a >= 240
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
                || first == 0x2001 && v6.segments()[1] == 0x0db8
                || v6 == Ipv6Addr::from([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254])
        }
    }
}

/// The HTTP client's resolver: resolves with the system resolver and passes on only
/// the addresses the policy admits.
pub struct GuardedResolver {
    pub policy: Arc<AddressPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let admitted = policy.resolve(name.as_str()).await?;
            Ok(Box::new(admitted.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(policy: &AddressPolicy, ip: &str) -> bool {
        !policy.address_allowed(ip.parse().unwrap())
    }

    #[test]
    fn internal_addresses_are_refused_by_default() {
        let policy = AddressPolicy::default();
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.5.5",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(refused(&policy, ip), "{ip} should be refused");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(!refused(&policy, ip), "{ip} should be admitted");
        }
    }

    #[test]
    fn the_allow_list_admits_addresses_networks_and_names() {
        let policy = AddressPolicy::new(&["127.0.0.1".into(), "10.1.0.0/16".into()]);
        assert!(!refused(&policy, "127.0.0.1"));
        assert!(!refused(&policy, "::ffff:127.0.0.1"));
        assert!(refused(&policy, "127.0.0.2"));
        assert!(!refused(&policy, "10.1.200.3"));
        assert!(refused(&policy, "10.2.0.1"));
        let by_name = AddressPolicy::new(&["Internal.Example".into()]);
        assert!(by_name.host_allowed("internal.example."));
        assert!(!by_name.host_allowed("other.example"));
    }

    #[test]
    fn urls_naming_addresses_are_checked_before_any_request() {
        let policy = AddressPolicy::default();
        let check = |url: &str| policy.check_url(&url::Url::parse(url).unwrap());
        assert!(check("http://127.0.0.1:8080/hook").is_err());
        assert!(check("http://[::1]/hook").is_err());
        assert!(check("http://169.254.169.254/latest/meta-data").is_err());
        assert!(check("ftp://example.com/").is_err());
        assert!(check("https://example.com/hook").is_ok());
    }

    #[actix_web::test]
    async fn names_resolving_to_loopback_are_refused() {
        let policy = AddressPolicy::default();
        assert!(policy.resolve("localhost").await.is_err());
        let allowed = AddressPolicy::new(&["localhost".into()]);
        assert!(!allowed.resolve("localhost").await.unwrap().is_empty());
    }
}
