//! The server a client talks to, parsed from `http://HOST:PORT` and resolved once.

use std::net::SocketAddr;

use http::uri::Authority;
use http::HeaderValue;

/// Why a target URL was refused or could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Not `http://`: the benchmark only speaks plain HTTP/1.1 on loopback, so TLS would measure
    /// the wrong thing.
    #[error("unsupported target {0:?}: expected http://HOST:PORT (https and other schemes are not supported)")]
    Scheme(String),
    /// The part after `http://` is not a bare `HOST[:PORT]`.
    #[error("malformed target {url:?}: {reason}")]
    Malformed {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Name resolution failed.
    #[error("cannot resolve {host:?}: {source}")]
    Resolve {
        /// `HOST:PORT` as given.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
}

/// A resolved server address plus the `Host` header to send it.
///
/// Resolution happens once, up front: thousands of clients must not each hit the resolver, and
/// every connection of a run should reach the same address.
#[derive(Debug, Clone)]
pub struct Target {
    addr: SocketAddr,
    host: HeaderValue,
    /// The server's dialect.
    profile: crate::profile::Profile,
    /// The local address to connect from; `None` lets the kernel choose. Each source address
    /// has its own ~28,000 ephemeral ports, so big runs spread over 127.x.y.z.
    source: Option<std::net::IpAddr>,
    /// How to speak to the FCM-style gateway (its project, token, send options), when the
    /// profile is [`Profile::Gateway`](crate::profile::Profile::Gateway).
    gateway: Option<std::sync::Arc<crate::gateway::options::GatewayOptions>>,
}

impl Target {
    /// The same target, with the gateway's send options.
    pub fn with_gateway(
        mut self,
        options: Option<crate::gateway::options::GatewayOptions>,
    ) -> Target {
        self.gateway = options.map(std::sync::Arc::new);
        self
    }

    /// The gateway's send options, if set.
    pub fn gateway(&self) -> Option<&crate::gateway::options::GatewayOptions> {
        self.gateway.as_deref()
    }

    /// The same target, spoken to in `profile`'s dialect.
    pub fn with_profile(mut self, profile: crate::profile::Profile) -> Target {
        self.profile = profile;
        self
    }

    /// The server's dialect.
    pub fn profile(&self) -> crate::profile::Profile {
        self.profile
    }

    /// The same target, connected to from `source` (port chosen by the kernel).
    pub fn with_source(mut self, source: Option<std::net::IpAddr>) -> Target {
        self.source = source;
        self
    }

    /// The local address connections come from, if fixed.
    pub fn source(&self) -> Option<std::net::IpAddr> {
        self.source
    }

    /// Parses `http://HOST[:PORT][/]` (port 80 when omitted) and resolves it with
    /// [`tokio::net::lookup_host`], keeping the first address.
    pub async fn resolve(url: &str) -> Result<Target, TargetError> {
        let authority = parse_url(url)?;
        let port = authority.port_u16().unwrap_or(80);
        let host_port = format!("{}:{}", authority.host(), port);
        let mut addrs = tokio::net::lookup_host(&host_port)
            .await
            .map_err(|source| TargetError::Resolve {
                host: host_port.clone(),
                source,
            })?;
        let addr = addrs.next().ok_or_else(|| TargetError::Resolve {
            host: host_port.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address found"),
        })?;
        let host =
            HeaderValue::from_str(authority.as_str()).map_err(|_| TargetError::Malformed {
                url: url.to_owned(),
                reason: "host is not a valid header value",
            })?;
        Ok(Target {
            addr,
            host,
            profile: Default::default(),
            source: None,
            gateway: None,
        })
    }

    /// A target for an address already known, e.g. a test server bound to `127.0.0.1:0`.
    pub fn from_addr(addr: SocketAddr) -> Target {
        let host = HeaderValue::from_str(&addr.to_string())
            .expect("a socket address is a valid header value");
        Target {
            addr,
            host,
            profile: Default::default(),
            source: None,
            gateway: None,
        }
    }

    /// The address every connection goes to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `Host` header value (`HOST:PORT` as written in the URL).
    pub fn host_header(&self) -> &HeaderValue {
        &self.host
    }

    /// The `Host` header value as text.
    pub fn host(&self) -> &str {
        // Built from a `&str` or a `SocketAddr`, so it is always visible ASCII.
        self.host.to_str().unwrap_or_default()
    }
}

/// Checks the URL's shape without resolving it.
fn parse_url(url: &str) -> Result<Authority, TargetError> {
    let malformed = |reason| TargetError::Malformed {
        url: url.to_owned(),
        reason,
    };
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some(_) => return Err(TargetError::Scheme(url.to_owned())),
        None => return Err(malformed("missing http:// prefix")),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err(malformed("missing host"));
    }
    if rest.contains(['/', '?', '#']) {
        return Err(malformed(
            "a target is only http://HOST:PORT, without path, query or fragment",
        ));
    }
    if rest.contains('@') {
        return Err(malformed("user info is not supported"));
    }
    let authority: Authority = rest.parse().map_err(|_| malformed("invalid HOST:PORT"))?;
    if authority.host().is_empty() {
        return Err(malformed("missing host"));
    }
    // `Authority` accepts any digits as a port; only a u16 is one.
    match &authority.as_str()[authority.host().len()..] {
        "" => {}
        port => {
            if port[1..].parse::<u16>().is_err() {
                return Err(malformed("invalid port"));
            }
        }
    }
    Ok(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_http_host_port() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080").unwrap().as_str(),
            "127.0.0.1:8080"
        );
        assert_eq!(
            parse_url("http://localhost:80/").unwrap().as_str(),
            "localhost:80"
        );
        assert_eq!(parse_url("HTTP://[::1]:9000").unwrap().host(), "[::1]");
        assert_eq!(parse_url("http://example").unwrap().port_u16(), None);
    }

    #[test]
    fn rejects_other_shapes() {
        assert!(matches!(
            parse_url("https://127.0.0.1:8443"),
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(
            parse_url("ws://127.0.0.1:1"),
            Err(TargetError::Scheme(_))
        ));
        for bad in [
            "127.0.0.1:8080",
            "http://",
            "http:///",
            "http://h:1/path",
            "http://h:1?x",
            "http://u@h:1",
            "http://h:",
            "http://h:99999",
        ] {
            assert!(
                matches!(parse_url(bad), Err(TargetError::Malformed { .. })),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn resolves_loopback() {
        let t = Target::resolve("http://127.0.0.1:4321/").await.unwrap();
        assert_eq!(t.addr(), "127.0.0.1:4321".parse().unwrap());
        assert_eq!(t.host(), "127.0.0.1:4321");
        let t = Target::from_addr("[::1]:5".parse().unwrap());
        assert_eq!(t.host(), "[::1]:5");
    }
}
