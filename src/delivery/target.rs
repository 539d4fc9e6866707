//! Where webhook callbacks may go: the guard against server-side request forgery.
//!
//! A callback URL is user input that makes this server open a connection, so an
//! unchecked one could reach the server's own admin ports, the cloud metadata
//! service or anything else on the private network. This module owns the rule
//! that callbacks reach only global addresses, plus the ranges an operator opens
//! with an allow-list, and it applies the rule at the two moments that matter:
//!
//! - when a URL is saved: [`TargetPolicy::check_url`] for its form and IP literals,
//!   then [`TargetPolicy::check_resolved`] for the addresses its host resolves to;
//! - when a request is sent: [`TargetPolicy::resolver`] gives reqwest a resolver
//!   that hands over only permitted addresses, so the address checked is the
//!   address connected to, and a name re-pointed after saving (DNS rebinding)
//!   gains nothing.
//!
//! It does not build the HTTP client, follow redirects, sign or retry: the
//! delivery code does. [`TargetPolicy::resolver`] says how that client must be
//! built for the guard to hold.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Which destinations callbacks may reach.
#[derive(Debug, Clone)]
pub struct TargetPolicy {
    /// Ranges opened on top of the global addresses, e.g. `127.0.0.0/8` for tests
    /// and the demo, or a private subnet where an operator's receivers live.
    allow: Vec<IpNet>,
}

/// Why a callback target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not a URL, a scheme other than http or https, no host, or a user name or
    /// password in the URL. The message says which.
    #[error("invalid callback URL: {0}")]
    InvalidUrl(String),

    /// The host is, or resolves to, an address callbacks may not reach.
    #[error("callback address {address} is {reason}")]
    ForbiddenAddress {
        /// The refused address.
        address: IpAddr,
        /// Why, as returned by [`classify`], e.g. reason::LOOPBACK.
        reason: &'static str,
    },

    /// The host name resolves to no address. Holds the name.
    #[error("callback host {0} does not resolve to any address")]
    Unresolvable(String),
}

/// The resolver [`TargetPolicy::resolver`] returns: the system resolver, with every
/// address the policy does not permit removed.
#[derive(Debug)]
pub struct PolicyResolver {
    policy: TargetPolicy,
    /// The system resolver in production, a fake in tests.
    lookup: Lookup,
}

/// Resolves a host name and port to addresses.
type Lookup = fn(String, u16) -> LookupFuture;

/// What a [`Lookup`] returns.
type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// How many errors deep [`TargetError::find_in`] looks before giving up.
const MAX_ERROR_DEPTH: usize = 32;

// === impl TargetPolicy ===

impl TargetPolicy {
    /// Only global addresses, plus `allow` (CIDRs like `127.0.0.0/8`, `::1/128`).
    pub fn new(allow: Vec<IpNet>) -> Self {
        TargetPolicy { allow }
    }

    /// Whether an address may be connected to: it is in the allow-list or global.
    ///
    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is judged as the IPv4
    /// address it carries, for the allow-list as for [`classify`], since a
    /// connection to it reaches that IPv4 host.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.check_ip(ip).is_ok()
    }

    /// Checks a URL's form: it parses, its scheme is http or https, it has a
    /// host and no user name or password, and a host that is an IP literal is
    /// permitted. Used when a callback URL is saved and before each send; host
    /// names are resolved and checked by [`check_resolved`](Self::check_resolved)
    /// and, when sending, by [`resolver`](Self::resolver).
    ///
    /// Every spelling of an IPv4 address (`0x7f.1`, `2130706433`, `0177.0.0.1`,
    /// `127.1`) is rewritten by the URL parser to its dotted form first, so they
    /// are all caught as literals.
    ///
    /// # Errors
    ///
    /// [`TargetError::InvalidUrl`] for a malformed URL,
    /// [`TargetError::ForbiddenAddress`] for an IP literal that is not permitted.
    pub fn check_url(&self, url: &str) -> Result<Url, TargetError> {
        let url =
            Url::parse(url).map_err(|e| TargetError::InvalidUrl(format!("not a URL ({e})")))?;
        let host = check_form(&url)?;

        if let Some(ip) = ip_literal(host) {
            self.check_ip(ip)?;
        }
        Ok(url)
    }

    /// Checks the URL's form as [`check_url`](Self::check_url) does, resolves its
    /// host with the system resolver and checks **every** address: a name that
    /// resolves to both a public and a private address is refused. Returns the
    /// addresses, with the URL's port.
    ///
    /// This is for saving a URL, where a clear refusal helps the user. At send
    /// time the [`resolver`](Self::resolver) is what protects, as the name may
    /// resolve differently by then.
    ///
    /// # Errors
    ///
    /// [`TargetError::InvalidUrl`] for a malformed URL,
    /// [`TargetError::Unresolvable`] when the name does not resolve, and
    /// [`TargetError::ForbiddenAddress`] for the first address not permitted.
    pub async fn check_resolved(&self, url: &Url) -> Result<Vec<SocketAddr>, TargetError> {
        self.check_resolved_with(url, system_lookup).await
    }

    /// A reqwest DNS resolver: it resolves with the system resolver and returns
    /// only the permitted addresses, and it fails the request, with a
    /// [`TargetError`] inside the `reqwest::Error` (see [`TargetError::find_in`]),
    /// when none is. Because reqwest connects only to what its resolver returns,
    /// the address checked is the address connected to.
    ///
    /// Three things are needed around it for the guard to hold:
    ///
    /// - **Call [`check_url`](Self::check_url) before each send.** reqwest does
    ///   not pass IP-literal hosts (`http://10.0.0.1/`) to any resolver, so only
    ///   `check_url` sees them.
    /// - **Build the client with `.no_proxy()`.** Otherwise reqwest honours
    ///   `HTTP_PROXY`-style variables: the resolver would then check the proxy's
    ///   address and the proxy would resolve the callback's host unchecked.
    /// - **Build it with `.redirect(reqwest::redirect::Policy::none())`,** so a
    ///   receiver cannot send the request on to an unchecked URL.
    ///
    /// ```
    /// # use herald::delivery::target::TargetPolicy;
    /// let policy = TargetPolicy::new(Vec::new());
    /// let client = reqwest::Client::builder()
    ///     .dns_resolver(policy.resolver())
    ///     .redirect(reqwest::redirect::Policy::none())
    ///     .no_proxy()
    ///     .build()?;
    /// # Ok::<(), reqwest::Error>(())
    /// ```
    ///
    /// It returns the concrete `Arc<PolicyResolver>` rather than an
    /// `Arc<dyn Resolve>` because `ClientBuilder::dns_resolver` takes an `Arc` of
    /// a sized type.
    pub fn resolver(&self) -> Arc<PolicyResolver> {
        Arc::new(PolicyResolver {
            policy: self.clone(),
            lookup: system_lookup,
        })
    }

    /// `Ok` when `ip` is in the allow-list or global, else why it is refused.
    fn check_ip(&self, ip: IpAddr) -> Result<(), TargetError> {
        // An IPv4-mapped address is the IPv4 host it carries, for the allow-list too.
        let ip = ip.to_canonical();
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }

        match classify(ip) {
            None => Ok(()),
            Some(reason) => Err(TargetError::ForbiddenAddress {
                address: ip,
                reason,
            }),
        }
    }

    /// [`check_resolved`](Self::check_resolved) with the resolver given.
    async fn check_resolved_with(
        &self,
        url: &Url,
        lookup: Lookup,
    ) -> Result<Vec<SocketAddr>, TargetError> {
        let host = check_form(url)?;
        // http and https always have a known default port.
        let port = url
            .port_or_known_default()
            .ok_or_else(|| TargetError::InvalidUrl("no port".to_owned()))?;

        // A literal is its own address: nothing to resolve.
        if let Some(ip) = ip_literal(host) {
            self.check_ip(ip)?;
            return Ok(vec![SocketAddr::new(ip, port)]);
        }

        let unresolvable = || TargetError::Unresolvable(host.to_owned());
        let addrs = lookup(host.to_owned(), port)
            .await
            .map_err(|_| unresolvable())?;
        if addrs.is_empty() {
            return Err(unresolvable());
        }
        for addr in &addrs {
            self.check_ip(addr.ip())?;
        }
        Ok(addrs)
    }

    /// The permitted addresses among `addrs`, which `host` resolved to.
    ///
    /// # Errors
    ///
    /// [`TargetError::Unresolvable`] when `addrs` is empty, and the refusal of the
    /// first address when none is permitted.
    fn keep_permitted(
        &self,
        host: &str,
        addrs: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, TargetError> {
        let mut first_refusal = None;
        let mut permitted = Vec::with_capacity(addrs.len());
        for addr in addrs {
            match self.check_ip(addr.ip()) {
                Ok(()) => permitted.push(addr),
                Err(refusal) => {
                    first_refusal.get_or_insert(refusal);
                }
            }
        }

        match (permitted.is_empty(), first_refusal) {
            (false, _) => Ok(permitted),
            (true, Some(refusal)) => Err(refusal),
            (true, None) => Err(TargetError::Unresolvable(host.to_owned())),
        }
    }
}

// === impl PolicyResolver ===

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let lookup = self.lookup;
        let host = name.as_str().to_owned();

        Box::pin(async move {
            // Port 0: reqwest puts the URL's port, or the scheme's, on what we return.
            // A failed lookup is passed on as it is, keeping its cause.
            let addrs = lookup(host.clone(), 0).await?;
            let permitted = policy.keep_permitted(&host, addrs)?;
            let addrs: Addrs = Box::new(permitted.into_iter());
            Ok(addrs)
        })
    }
}

// === impl TargetError ===

impl TargetError {
    /// A stable code for API errors: `invalid_target`.
    pub fn code(&self) -> &'static str {
        match self {
            TargetError::InvalidUrl(_)
            | TargetError::ForbiddenAddress { .. }
            | TargetError::Unresolvable(_) => "invalid_target",
        }
    }

    /// The `TargetError` in `error`'s chain of sources, if any: how a delivery
    /// tells a `reqwest::Error` caused by [`TargetPolicy::resolver`]'s refusal
    /// from a network failure.
    pub fn find_in<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a TargetError> {
        std::iter::successors(Some(error), |&e| e.source())
            .take(MAX_ERROR_DEPTH)
            .find_map(|e| e.downcast_ref::<TargetError>())
    }
}

// === address classification ===

/// Why `ip` is not a global address, or `None` when it is.
///
/// Follows the IANA special-purpose address registries, on stable Rust (the
/// standard library's `is_global` is unstable). Where a range is special but
/// still globally reachable, it is refused anyway when no webhook receiver can
/// live there (anycast service addresses, identifiers); each such case says so.
pub fn classify(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => classify_v4(ip),
        IpAddr::V6(ip) => classify_v6(ip),
    }
}

/// IPv4 ranges refused that the standard library has no stable test for, in
/// the order checked.
const V4_RANGES: [(Ipv4Net, &str); 6] = [
    // 0.0.0.0/8, "this network": only valid as a source address.
    (v4net([0, 0, 0, 0], 8), reason::THIS_NETWORK),
    // 100.64.0.0/10, shared address space for carrier-grade NAT (RFC 6598).
    (v4net([100, 64, 0, 0], 10), reason::SHARED),
    // 192.0.0.0/24, IETF protocol assignments (RFC 6890). Its two anycast
    // service addresses (192.0.0.9, 192.0.0.10) are refused too.
    (v4net([192, 0, 0, 0], 24), reason::IETF_ASSIGNMENT),
    // 192.88.99.0/24, the deprecated 6to4 relay anycast (RFC 7526).
    (v4net([192, 88, 99, 0], 24), reason::SIX_TO_FOUR_RELAY),
    // 198.18.0.0/15, network benchmarking (RFC 2544).
    (v4net([198, 18, 0, 0], 15), reason::BENCHMARKING),
    // 240.0.0.0/4, reserved for future use (RFC 1112).
    (v4net([240, 0, 0, 0], 4), reason::RESERVED),
];

/// Why an IPv4 address is not global, or `None`.
fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    // The ranges the standard library knows, named by its methods.
    let reason = if ip.is_unspecified() {
        reason::UNSPECIFIED
    } else if ip.is_loopback() {
        // 127.0.0.0/8
        reason::LOOPBACK
    } else if ip.is_private() {
        // 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16
        reason::PRIVATE
    } else if ip.is_link_local() {
        // 169.254.0.0/16, where cloud metadata services answer
        reason::LINK_LOCAL
    } else if ip.is_documentation() {
        // 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24
        reason::DOCUMENTATION
    } else if ip.is_multicast() {
        // 224.0.0.0/4
        reason::MULTICAST
    } else if ip.is_broadcast() {
        // 255.255.255.255, checked before 240.0.0.0/4, which holds it
        reason::BROADCAST
    } else {
        return first_match(&V4_RANGES, |net| net.contains(&ip));
    };
    Some(reason)
}

/// IPv6 ranges refused outright, in the order checked (more specific first).
const V6_RANGES: [(Ipv6Net, &str); 10] = [
    // ::/96, IPv4-compatible addresses, deprecated by RFC 4291 and never routed,
    // whatever IPv4 address they carry. (:: and ::1 are checked before.)
    (v6net([0, 0, 0, 0, 0, 0, 0, 0], 96), reason::IPV4_COMPATIBLE),
    // 64:ff9b:1::/48, NAT64 prefix for local use (RFC 8215).
    (
        v6net([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        reason::LOCAL_NAT64,
    ),
    // 100::/64, discard-only (RFC 6666).
    (v6net([0x100, 0, 0, 0, 0, 0, 0, 0], 64), reason::DISCARD),
    // 2001::/32, Teredo tunnels (RFC 4380), which hide the IPv4 hosts behind them.
    (v6net([0x2001, 0, 0, 0, 0, 0, 0, 0], 32), reason::TEREDO),
    // 2001:2::/48, benchmarking (RFC 5180).
    (
        v6net([0x2001, 2, 0, 0, 0, 0, 0, 0], 48),
        reason::BENCHMARKING,
    ),
    // 2001:10::/28, deprecated ORCHID identifiers (RFC 4843).
    (v6net([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28), reason::ORCHID),
    // 2001::/23, the rest of the IETF protocol assignments (RFC 2928). The few
    // reachable ones (anycast services, AMT, AS112, ORCHIDv2, drone ids) host
    // no webhook receiver and are refused too.
    (
        v6net([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
        reason::IETF_ASSIGNMENT,
    ),
    // 2001:db8::/32 (RFC 3849) and 3fff::/20 (RFC 9637), documentation.
    (
        v6net([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        reason::DOCUMENTATION,
    ),
    (
        v6net([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),
        reason::DOCUMENTATION,
    ),
    // fec0::/10, site-local, deprecated by RFC 3879 but still honoured by some
    // stacks.
    (v6net([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), reason::SITE_LOCAL),
];

/// `64:ff9b::/96`, the NAT64 well-known prefix (RFC 6052): the last 32 bits are an
/// IPv4 address that a translator connects to.
const NAT64: Ipv6Net = v6net([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96);

/// `2002::/16`, 6to4 (RFC 3056): bits 16 to 48 are the IPv4 address of the site's
/// 6to4 router.
const SIX_TO_FOUR: Ipv6Net = v6net([0x2002, 0, 0, 0, 0, 0, 0, 0], 16);

/// `2000::/3`, the only range IANA allocates global unicast addresses from.
const GLOBAL_UNICAST: Ipv6Net = v6net([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);

/// Why an IPv6 address is not global, or `None`.
fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    // ::ffff:0:0/96, IPv4-mapped: a connection to it reaches the IPv4 host.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }

    // The ranges the standard library knows, named by its methods.
    if ip.is_unspecified() {
        // ::
        return Some(reason::UNSPECIFIED);
    }
    if ip.is_loopback() {
        // ::1
        return Some(reason::LOOPBACK);
    }
    if ip.is_unique_local() {
        // fc00::/7
        return Some(reason::UNIQUE_LOCAL);
    }
    if ip.is_unicast_link_local() {
        // fe80::/10
        return Some(reason::LINK_LOCAL);
    }
    if ip.is_multicast() {
        // ff00::/8
        return Some(reason::MULTICAST);
    }

    // Forms that carry an IPv4 address are as global as that address.
    let [_, _, a, b, c, d, ..] = ip.octets();
    if SIX_TO_FOUR.contains(&ip) && classify_v4(Ipv4Addr::new(a, b, c, d)).is_some() {
        return Some(reason::SIX_TO_FOUR_NON_GLOBAL);
    }
    let [.., a, b, c, d] = ip.octets();
    if NAT64.contains(&ip) && classify_v4(Ipv4Addr::new(a, b, c, d)).is_some() {
        return Some(reason::NAT64_NON_GLOBAL);
    }

    if let Some(reason) = first_match(&V6_RANGES, |net| net.contains(&ip)) {
        return Some(reason);
    }

    // Everything else outside 2000::/3 is unallocated. The NAT64 prefix, which
    // lies outside it, was judged above.
    if !GLOBAL_UNICAST.contains(&ip) && !NAT64.contains(&ip) {
        return Some(reason::RESERVED);
    }
    None
}

/// The reasons [`classify`] gives, each written once.
mod reason {
    pub(super) const UNSPECIFIED: &str = "an unspecified address";
    pub(super) const THIS_NETWORK: &str = "a \"this network\" address";
    pub(super) const LOOPBACK: &str = "a loopback address";
    pub(super) const PRIVATE: &str = "a private address";
    pub(super) const SHARED: &str = "a shared (carrier-grade NAT) address";
    pub(super) const LINK_LOCAL: &str = "a link-local address";
    pub(super) const IETF_ASSIGNMENT: &str = "an IETF protocol assignment address";
    pub(super) const DOCUMENTATION: &str = "a documentation address";
    pub(super) const SIX_TO_FOUR_RELAY: &str = "a deprecated 6to4 relay anycast address";
    pub(super) const BENCHMARKING: &str = "a benchmarking address";
    pub(super) const MULTICAST: &str = "a multicast address";
    pub(super) const BROADCAST: &str = "a broadcast address";
    pub(super) const RESERVED: &str = "a reserved address";
    pub(super) const IPV4_COMPATIBLE: &str = "a deprecated IPv4-compatible address";
    pub(super) const LOCAL_NAT64: &str = "a local-use NAT64 address";
    pub(super) const DISCARD: &str = "a discard-only address";
    pub(super) const TEREDO: &str = "a Teredo address";
    pub(super) const ORCHID: &str = "a deprecated ORCHID address";
    pub(super) const UNIQUE_LOCAL: &str = "a unique local address";
    pub(super) const SITE_LOCAL: &str = "a site-local address";
    pub(super) const SIX_TO_FOUR_NON_GLOBAL: &str = "a 6to4 address of a non-global IPv4 address";
    pub(super) const NAT64_NON_GLOBAL: &str = "a NAT64 address of a non-global IPv4 address";
}

// === helpers ===

/// Checks what [`TargetPolicy::check_url`] and [`TargetPolicy::check_resolved`]
/// share, and returns the URL's host.
fn check_form(url: &Url) -> Result<&str, TargetError> {
    // The messages leave the URL out: it may hold a password, and errors get logged.
    let invalid = |why: &str| TargetError::InvalidUrl(why.to_owned());

    let scheme = url.scheme();
    if !matches!(scheme, "http" | "https") {
        return Err(invalid(&format!(
            "the scheme is {scheme}, not http or https"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("a user name or password in the URL is not allowed"));
    }
    url.host_str()
        .filter(|host| !host.is_empty())
        .ok_or_else(|| invalid("the URL has no host"))
}

/// The address a URL host names, if it is an IP literal (IPv6 in brackets).
///
/// The URL parser has already rewritten every IPv4 spelling to dotted form, so a
/// host that does not parse here is a name, the same test hyper makes before
/// deciding to resolve.
fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// The reason of the first range in `ranges` that `hit` matches.
fn first_match<N>(ranges: &[(N, &'static str)], hit: impl Fn(&N) -> bool) -> Option<&'static str> {
    ranges
        .iter()
        .find(|(net, _)| hit(net))
        .map(|&(_, reason)| reason)
}

/// The system resolver, through tokio.
fn system_lookup(host: String, port: u16) -> LookupFuture {
    Box::pin(async move {
        Ok(tokio::net::lookup_host((host.as_str(), port))
            .await?
            .collect())
    })
}

/// An IPv4 network, checked at compile time.
const fn v4net(octets: [u8; 4], prefix_len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(
        Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]),
        prefix_len,
    )
}

/// An IPv6 network, checked at compile time.
const fn v6net(s: [u16; 8], prefix_len: u8) -> Ipv6Net {
    let addr = Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]);
    Ipv6Net::new_assert(addr, prefix_len)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn loopback_allowed() -> TargetPolicy {
        TargetPolicy::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ])
    }

    fn assert_class(cases: &[(&str, Option<&str>)]) {
        for &(text, expected) in cases {
            assert_eq!(classify(ip(text)), expected, "{text}");
        }
    }

    #[test]
    fn each_special_ipv4_range_is_named() {
        assert_class(&[
            ("0.0.0.0", Some(reason::UNSPECIFIED)),
            ("0.1.2.3", Some(reason::THIS_NETWORK)),
            ("10.1.2.3", Some(reason::PRIVATE)),
            ("172.16.0.1", Some(reason::PRIVATE)),
            ("172.31.255.255", Some(reason::PRIVATE)),
            ("192.168.1.1", Some(reason::PRIVATE)),
            ("100.64.0.1", Some(reason::SHARED)),
            ("100.127.255.255", Some(reason::SHARED)),
            ("127.0.0.1", Some(reason::LOOPBACK)),
            ("127.255.0.9", Some(reason::LOOPBACK)),
            ("169.254.169.254", Some(reason::LINK_LOCAL)),
            ("192.0.0.8", Some(reason::IETF_ASSIGNMENT)),
            ("192.0.0.9", Some(reason::IETF_ASSIGNMENT)),
            ("192.0.2.1", Some(reason::DOCUMENTATION)),
            ("198.51.100.7", Some(reason::DOCUMENTATION)),
            ("203.0.113.200", Some(reason::DOCUMENTATION)),
            ("192.88.99.1", Some(reason::SIX_TO_FOUR_RELAY)),
            ("198.18.0.1", Some(reason::BENCHMARKING)),
            ("198.19.255.255", Some(reason::BENCHMARKING)),
            ("224.0.0.1", Some(reason::MULTICAST)),
            ("239.255.255.250", Some(reason::MULTICAST)),
            ("240.0.0.1", Some(reason::RESERVED)),
            ("254.1.1.1", Some(reason::RESERVED)),
            ("255.255.255.255", Some(reason::BROADCAST)),
        ]);
    }

    #[test]
    fn global_ipv4_addresses_pass_even_next_to_special_ranges() {
        // Classification only: none of these is ever contacted.
        assert_class(&[
            ("93.184.216.34", None),
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("192.0.1.255", None),
            ("198.17.255.255", None),
            ("198.20.0.0", None),
            ("223.255.255.255", None),
        ]);
    }

    #[test]
    fn each_special_ipv6_range_is_named() {
        assert_class(&[
            ("::", Some(reason::UNSPECIFIED)),
            ("::1", Some(reason::LOOPBACK)),
            ("100::1", Some(reason::DISCARD)),
            ("64:ff9b:1::a00:1", Some(reason::LOCAL_NAT64)),
            ("2001::1", Some(reason::TEREDO)),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Some(reason::TEREDO)),
            ("2001:2::1", Some(reason::BENCHMARKING)),
            ("2001:10::1", Some(reason::ORCHID)),
            ("2001:1::1", Some(reason::IETF_ASSIGNMENT)),
            ("2001:1ff::1", Some(reason::IETF_ASSIGNMENT)),
            ("2001:db8::1", Some(reason::DOCUMENTATION)),
            ("3fff:fff::1", Some(reason::DOCUMENTATION)),
            ("fc00::1", Some(reason::UNIQUE_LOCAL)),
            ("fd12:3456::1", Some(reason::UNIQUE_LOCAL)),
            ("fe80::1", Some(reason::LINK_LOCAL)),
            ("febf::1", Some(reason::LINK_LOCAL)),
            ("fec0::1", Some(reason::SITE_LOCAL)),
            ("ff02::1", Some(reason::MULTICAST)),
            ("ff0e::1", Some(reason::MULTICAST)),
            ("4000::1", Some(reason::RESERVED)),
            ("::2:0:0:1", Some(reason::RESERVED)),
        ]);
    }

    #[test]
    fn ipv6_forms_carrying_ipv4_are_judged_by_that_ipv4() {
        assert_class(&[
            // IPv4-mapped: the IPv4 address's own reason.
            ("::ffff:127.0.0.1", Some(reason::LOOPBACK)),
            ("::ffff:10.0.0.1", Some(reason::PRIVATE)),
            ("::ffff:169.254.169.254", Some(reason::LINK_LOCAL)),
            ("::ffff:8.8.8.8", None),
            // IPv4-compatible: deprecated, so refused whatever it carries.
            ("::127.0.0.1", Some(reason::IPV4_COMPATIBLE)),
            ("::8.8.8.8", Some(reason::IPV4_COMPATIBLE)),
            // NAT64 well-known prefix.
            ("64:ff9b::7f00:1", Some(reason::NAT64_NON_GLOBAL)),
            ("64:ff9b::10.0.0.1", Some(reason::NAT64_NON_GLOBAL)),
            ("64:ff9b::808:808", None),
            // 6to4.
            ("2002:7f00:1::", Some(reason::SIX_TO_FOUR_NON_GLOBAL)),
            ("2002:a9fe:a9fe::1", Some(reason::SIX_TO_FOUR_NON_GLOBAL)),
            ("2002:c0a8:101::", Some(reason::SIX_TO_FOUR_NON_GLOBAL)),
            ("2002:0808:0808::", None),
        ]);
    }

    #[test]
    fn global_ipv6_addresses_pass() {
        // Classification only: none of these is ever contacted.
        assert_class(&[
            ("2606:4700::1111", None),
            ("2a00:1450:4001::200e", None),
            ("2001:200::1", None),
            ("2001:4860:4860::8888", None),
        ]);
    }

    #[test]
    fn by_default_only_global_addresses_are_permitted() {
        let policy = TargetPolicy::new(Vec::new());

        assert!(policy.permits(ip("93.184.216.34")));
        assert!(policy.permits(ip("2606:4700::1111")));
        for refused in [
            "127.0.0.1",
            "::1",
            "::ffff:127.0.0.1",
            "10.0.0.1",
            "fd00::1",
        ] {
            assert!(!policy.permits(ip(refused)), "{refused}");
        }
    }

    #[test]
    fn the_allow_list_opens_only_its_ranges() {
        let policy = loopback_allowed();

        for opened in ["127.0.0.1", "127.10.20.30", "::1", "::ffff:127.0.0.1"] {
            assert!(policy.permits(ip(opened)), "{opened}");
        }
        for still_refused in [
            "10.0.0.1",
            "169.254.169.254",
            "::2:0:0:1",
            "fe80::1",
            "0.0.0.0",
        ] {
            assert!(!policy.permits(ip(still_refused)), "{still_refused}");
        }
        assert!(policy.permits(ip("8.8.8.8")));
    }

    #[test]
    fn check_url_accepts_http_and_https_names_without_resolving() {
        let policy = TargetPolicy::new(Vec::new());

        // Names are left to check_resolved: these are parsed, never looked up.
        for good in [
            "https://hooks.example.com/herald",
            "http://example.com:8080/a?b=c",
        ] {
            assert!(policy.check_url(good).is_ok(), "{good}");
        }
        assert!(policy.check_url("https://93.184.216.34/hook").is_ok());
    }

    #[test]
    fn check_url_refuses_malformed_urls() {
        let policy = loopback_allowed();

        for bad in [
            "not a url",
            "ftp://example.com/file",
            "file:///etc/passwd",
            "gopher://127.0.0.1/",
            "http://",
            "http://user:pw@example.com/",
            "http://user@example.com/",
            "http://:pw@example.com/",
        ] {
            let refusal = policy.check_url(bad).unwrap_err();
            assert!(
                matches!(refusal, TargetError::InvalidUrl(_)),
                "{bad}: {refusal:?}"
            );
            assert_eq!(refusal.code(), "invalid_target");
        }
    }

    #[test]
    fn invalid_url_messages_say_why_and_never_echo_a_password() {
        let policy = TargetPolicy::new(Vec::new());
        let message = |url: &str| policy.check_url(url).unwrap_err().to_string();

        assert_eq!(
            message("ftp://example.com/"),
            "invalid callback URL: the scheme is ftp, not http or https"
        );
        assert_eq!(
            message("https://admin:hunter2@example.com/"),
            "invalid callback URL: a user name or password in the URL is not allowed"
        );
        assert_eq!(
            message("http://"),
            "invalid callback URL: not a URL (empty host)"
        );
    }

    #[test]
    fn check_url_refuses_every_spelling_of_a_forbidden_literal() {
        let policy = TargetPolicy::new(Vec::new());

        for (url, address) in [
            ("http://127.0.0.1/", "127.0.0.1"),
            ("http://0x7f.1/", "127.0.0.1"),
            ("http://2130706433/", "127.0.0.1"),
            ("http://0177.0.0.1/", "127.0.0.1"),
            ("http://127.1/", "127.0.0.1"),
            ("http://127.0.0.1./", "127.0.0.1"),
            ("http://%31%32%37.0.0.1/", "127.0.0.1"),
            ("http://0/", "0.0.0.0"),
            ("http://[::1]/", "::1"),
            ("http://[::ffff:7f00:1]/", "127.0.0.1"),
            ("http://[0:0:0:0:0:ffff:127.0.0.1]/", "127.0.0.1"),
            ("http://[::127.0.0.1]/", "::127.0.0.1"),
            ("http://[64:ff9b::7f00:1]/", "64:ff9b::7f00:1"),
            (
                "https://169.254.169.254/latest/meta-data/",
                "169.254.169.254",
            ),
            ("http://[fd00::1]:8080/", "fd00::1"),
        ] {
            match policy.check_url(url) {
                Err(TargetError::ForbiddenAddress { address: got, .. }) => {
                    assert_eq!(got, ip(address), "{url}");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_refusal_names_the_address_and_why() {
        let refusal = TargetPolicy::new(Vec::new())
            .check_url("http://0x7f.1/")
            .unwrap_err();

        assert_eq!(
            refusal.to_string(),
            "callback address 127.0.0.1 is a loopback address"
        );
        assert_eq!(refusal.code(), "invalid_target");
    }

    #[test]
    fn check_url_accepts_allowed_literals() {
        let policy = loopback_allowed();

        for url in [
            "http://127.0.0.1:8080/hook",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            assert!(policy.check_url(url).is_ok(), "{url}");
        }
    }

    #[tokio::test]
    async fn localhost_is_refused_unless_allowed() {
        let url = Url::parse("http://localhost:4321/hook").unwrap();

        // localhost resolves from the hosts file: no DNS server is asked.
        let refusal = TargetPolicy::new(Vec::new())
            .check_resolved(&url)
            .await
            .unwrap_err();
        let TargetError::ForbiddenAddress { address, .. } = refusal else {
            panic!("{refusal:?}");
        };
        assert!(address.is_loopback(), "{address}");

        let addrs = loopback_allowed().check_resolved(&url).await.unwrap();
        assert!(!addrs.is_empty());
        assert!(
            addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 4321),
            "{addrs:?}"
        );
    }

    /// Fake resolvers: the addresses are data and are never contacted.
    fn public_and_private(_: String, port: u16) -> LookupFuture {
        let addrs = vec![
            SocketAddr::new(ip("93.184.216.34"), port),
            SocketAddr::new(ip("10.0.0.7"), port),
        ];
        Box::pin(async move { Ok(addrs) })
    }

    fn only_public(_: String, port: u16) -> LookupFuture {
        let addrs = vec![
            SocketAddr::new(ip("93.184.216.34"), port),
            SocketAddr::new(ip("2606:4700::1111"), port),
        ];
        Box::pin(async move { Ok(addrs) })
    }

    fn only_private(_: String, port: u16) -> LookupFuture {
        let addrs = vec![SocketAddr::new(ip("169.254.169.254"), port)];
        Box::pin(async move { Ok(addrs) })
    }

    fn nothing(_: String, _: u16) -> LookupFuture {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn failing(_: String, _: u16) -> LookupFuture {
        Box::pin(async { Err(io::Error::other("no such host")) })
    }

    #[tokio::test]
    async fn check_resolved_refuses_a_name_with_any_forbidden_address() {
        let policy = TargetPolicy::new(Vec::new());
        let url = Url::parse("https://hooks.example.com/").unwrap();

        let refusal = policy
            .check_resolved_with(&url, public_and_private)
            .await
            .unwrap_err();
        assert_eq!(
            refusal,
            TargetError::ForbiddenAddress {
                address: ip("10.0.0.7"),
                reason: reason::PRIVATE
            }
        );

        let addrs = policy.check_resolved_with(&url, only_public).await.unwrap();
        assert_eq!(addrs.len(), 2);
        assert!(addrs.iter().all(|a| a.port() == 443));
    }

    #[tokio::test]
    async fn check_resolved_reports_names_that_do_not_resolve() {
        let policy = TargetPolicy::new(Vec::new());
        let url = Url::parse("https://hooks.example.com/").unwrap();
        let expected = TargetError::Unresolvable("hooks.example.com".to_owned());

        assert_eq!(
            policy.check_resolved_with(&url, nothing).await,
            Err(expected.clone())
        );
        assert_eq!(
            policy.check_resolved_with(&url, failing).await,
            Err(expected)
        );
    }

    #[tokio::test]
    async fn check_resolved_checks_literals_and_form_without_resolving() {
        // `failing` proves no lookup happens: a literal needs none.
        async fn check(url: &str) -> Result<Vec<SocketAddr>, TargetError> {
            let url = Url::parse(url).unwrap();
            TargetPolicy::new(Vec::new())
                .check_resolved_with(&url, failing)
                .await
        }

        let addrs = check("http://93.184.216.34:8080/").await.unwrap();
        assert_eq!(addrs, vec![SocketAddr::new(ip("93.184.216.34"), 8080)]);
        assert!(matches!(
            check("http://[::1]/").await,
            Err(TargetError::ForbiddenAddress { .. })
        ));
        assert!(matches!(
            check("ftp://93.184.216.34/").await,
            Err(TargetError::InvalidUrl(_))
        ));
    }

    async fn resolve_with(policy: TargetPolicy, lookup: Lookup) -> Result<Vec<SocketAddr>, String> {
        let resolver = PolicyResolver { policy, lookup };
        let name: Name = "hooks.example.com".parse().unwrap();
        match resolver.resolve(name).await {
            Ok(addrs) => Ok(addrs.collect()),
            Err(error) => Err(match TargetError::find_in(&*error) {
                Some(refusal) => refusal.to_string(),
                None => format!("other: {error}"),
            }),
        }
    }

    #[tokio::test]
    async fn the_resolver_returns_only_permitted_addresses() {
        let policy = TargetPolicy::new(Vec::new());

        let addrs = resolve_with(policy.clone(), public_and_private)
            .await
            .unwrap();
        assert_eq!(addrs, vec![SocketAddr::new(ip("93.184.216.34"), 0)]);

        let refusal = resolve_with(policy.clone(), only_private)
            .await
            .unwrap_err();
        assert_eq!(
            refusal,
            "callback address 169.254.169.254 is a link-local address"
        );

        let refusal = resolve_with(policy.clone(), nothing).await.unwrap_err();
        assert_eq!(
            refusal,
            "callback host hooks.example.com does not resolve to any address"
        );

        // A lookup failure is passed on as it is, not as a refusal.
        let failure = resolve_with(policy, failing).await.unwrap_err();
        assert_eq!(failure, "other: no such host");
    }

    /// A loopback server that answers one request with 200 "ok", and reports
    /// whether anyone connected within `wait`.
    async fn serve_one_request(wait: Duration) -> (u16, JoinHandle<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();

        let server = tokio::spawn(async move {
            let accepted = tokio::time::timeout(wait, listener.accept()).await;
            let Ok(Ok((mut socket, _))) = accepted else {
                return false;
            };

            // Read the request head, in at most 16 reads.
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            for _ in 0..16 {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
                if head.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let response = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
            let _ = socket.write_all(response.as_bytes()).await;
            true
        });
        (port, server)
    }

    fn client(policy: &TargetPolicy) -> reqwest::Client {
        reqwest::Client::builder()
            .dns_resolver(policy.resolver())
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn a_client_with_the_resolver_reaches_an_allowed_loopback_server() {
        let (port, server) = serve_one_request(Duration::from_secs(5)).await;
        // Only 127.0.0.0/8: were localhost also ::1, the resolver would drop it.
        let policy = TargetPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);

        let response = client(&policy)
            .get(format!("http://localhost:{port}/"))
            .send()
            .await;

        let response = response.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "ok");
        assert!(server.await.unwrap());
    }

    #[tokio::test]
    async fn a_client_with_the_resolver_cannot_reach_a_forbidden_server() {
        // The request fails before connecting; half a second more shows nothing came.
        let (port, server) = serve_one_request(Duration::from_millis(500)).await;
        let policy = TargetPolicy::new(Vec::new());

        let error = client(&policy)
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap_err();

        // The refusal is inside the reqwest error, so a delivery can tell it apart.
        let Some(TargetError::ForbiddenAddress { address, .. }) = TargetError::find_in(&error)
        else {
            panic!("{error:?}");
        };
        assert!(address.is_loopback(), "{address}");
        assert!(!server.await.unwrap(), "the server was connected to");
    }

    #[tokio::test]
    async fn ip_literals_bypass_the_resolver_so_check_url_must_run_before_sending() {
        let (port, server) = serve_one_request(Duration::from_secs(5)).await;
        let policy = TargetPolicy::new(Vec::new());
        let url = format!("http://127.0.0.1:{port}/");

        // The resolver is never asked about a literal: the request goes through.
        // This is why check_url must run before each send.
        let response = client(&policy).get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(server.await.unwrap());

        assert!(matches!(
            policy.check_url(&url),
            Err(TargetError::ForbiddenAddress { .. })
        ));
    }
}
