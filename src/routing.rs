//! The route table: which handler answers a request, chosen by host and path prefix in
//! the order the routes are declared. Pure data and matching; the HTTP front end acts
//! on the chosen [`Route`].

use std::path::PathBuf;

use actix_web::http::StatusCode;

use crate::config::{invalid, ConfigError, RouteHandler, Settings};

/// The routes of an instance, in declared order.
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<Route>,
}

/// One checked route.
#[derive(Debug)]
pub struct Route {
    host: HostPattern,
    /// The path prefix without its trailing slash; empty for `/`.
    prefix: String,
    pub action: RouteAction,
    /// Largest request body on this route.
    pub max_body_bytes: usize,
    /// Whether cacheable GET/HEAD responses of this route are kept.
    pub cache: bool,
}

/// What a matched route does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAction {
    /// Serve files: the `[static]` site (`None`) or a folder of the route's own.
    Static { root: Option<PathBuf> },
    /// Gatehouse's own API.
    Api,
    /// Forward to the named upstream pool.
    Proxy {
        upstream: String,
        strip_prefix: bool,
    },
    /// Answer with `status` and `Location: to`, `{uri}` replaced by path and query.
    Redirect { to: String, status: StatusCode },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Exact(String),
    /// `*.example.com`: stored as `.example.com`.
    Subdomains(String),
}

impl HostPattern {
    fn parse(host: Option<&str>) -> Self {
        match host.map(str::to_ascii_lowercase) {
            None => Self::Any,
            Some(host) if host.is_empty() || host == "*" => Self::Any,
            Some(host) => match host.strip_prefix('*') {
                Some(suffix) => Self::Subdomains(suffix.to_string()),
                None => Self::Exact(host),
            },
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(name) => name.eq_ignore_ascii_case(host),
            Self::Subdomains(suffix) => {
                host.len() > suffix.len()
                    && host.as_bytes()[host.len() - suffix.len()..]
                        .eq_ignore_ascii_case(suffix.as_bytes())
            }
        }
    }
}

impl Route {
    /// The route's path prefix (`""` for `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn matches(&self, host: &str, path: &str) -> bool {
        self.host.matches(host) && strip_path_prefix(&self.prefix, path).is_some()
    }
}

/// `path` below `prefix` on a segment boundary: `/app` → `/app/x` gives `/x`, `/app`
/// gives ``, `/apple` gives `None`.
pub fn strip_path_prefix<'a>(prefix: &str, path: &'a str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

impl RouteTable {
    /// Checks the `[[routes]]` of `settings` without touching the file system.
    pub fn validate(settings: &Settings) -> Result<(), ConfigError> {
        Self::new(settings).map(drop)
    }

    /// The checked route table of `settings`.
    pub fn new(settings: &Settings) -> Result<Self, ConfigError> {
        let routes = settings
            .routes
            .iter()
            .enumerate()
            .map(|(i, route)| {
                let key = |field: &str| format!("routes[{i}].{field}");
                if !route.path.starts_with('/') {
                    return Err(invalid(&key("path"), "must start with /"));
                }
                let action = match route.handler {
                    RouteHandler::Static => RouteAction::Static {
                        root: route.root.clone(),
                    },
                    RouteHandler::Api => RouteAction::Api,
                    RouteHandler::Proxy => {
                        let Some(upstream) = route.upstream.clone() else {
                            return Err(invalid(&key("upstream"), "a proxy route needs one"));
                        };
                        if !settings.upstreams.contains_key(&upstream) {
                            return Err(invalid(
                                &key("upstream"),
                                &format!("no [upstreams.{upstream}] is configured"),
                            ));
                        }
                        RouteAction::Proxy {
                            upstream,
                            strip_prefix: route.strip_prefix,
                        }
                    }
                    RouteHandler::Redirect => {
                        let Some(to) = route.to.clone().filter(|to| !to.is_empty()) else {
                            return Err(invalid(&key("to"), "a redirect route needs a target"));
                        };
                        let status = route.status.unwrap_or(308);
                        if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                            return Err(invalid(
                                &key("status"),
                                "must be 301, 302, 303, 307 or 308",
                            ));
                        }
                        RouteAction::Redirect {
                            to,
                            status: StatusCode::from_u16(status).expect("checked above"),
                        }
                    }
                };
                if route.cache && !matches!(action, RouteAction::Proxy { .. }) {
                    return Err(invalid(
                        &key("cache"),
                        "only proxy routes use the response cache",
                    ));
                }
                let default_limit = match action {
                    RouteAction::Api => settings.server.max_body_bytes,
                    _ => settings.limits.max_body_bytes,
                };
                Ok(Route {
                    host: HostPattern::parse(route.host.as_deref()),
                    prefix: route.path.trim_end_matches('/').to_string(),
                    action,
                    max_body_bytes: route.max_body_bytes.unwrap_or(default_limit),
                    cache: route.cache,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { routes })
    }

    /// The first route matching `host` (without port) and `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<&Route> {
        self.find_index(host, path).map(|index| &self.routes[index])
    }

    /// The position of the first route matching `host` and `path`.
    pub fn find_index(&self, host: &str, path: &str) -> Option<usize> {
        self.routes
            .iter()
            .position(|route| route.matches(host, path))
    }

    /// Every route, in order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

/// The host a request is addressed to, without port (case as sent; the route table
/// compares ignoring case): the URI's authority (HTTP/2, absolute-form requests) or the
/// `Host` header.
pub fn request_host(head: &actix_web::dev::RequestHead) -> &str {
    let raw = head
        .uri
        .host()
        .or_else(|| {
            head.headers
                .get(actix_web::http::header::HOST)
                .and_then(|value| value.to_str().ok())
        })
        .unwrap_or("");
    if raw.starts_with('[') {
        raw.split_inclusive(']').next().unwrap_or(raw)
    } else {
        // A byte search: `rsplit_once(':')` costs several times more, on every request.
        raw.bytes()
            .rposition(|b| b == b':')
            .map_or(raw, |colon| &raw[..colon])
    }
}

/// A redirect target with `{uri}` replaced by the request's path and query.
pub fn redirect_location(to: &str, path_and_query: &str) -> String {
    to.replace("{uri}", path_and_query)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RouteSettings, UpstreamSettings};

    fn route(host: Option<&str>, path: &str, handler: RouteHandler) -> RouteSettings {
        RouteSettings {
            host: host.map(str::to_string),
            path: path.to_string(),
            handler,
            root: None,
            upstream: (handler == RouteHandler::Proxy).then(|| "app".to_string()),
            strip_prefix: false,
            cache: false,
            to: (handler == RouteHandler::Redirect).then(|| "https://x{uri}".to_string()),
            status: None,
            max_body_bytes: None,
        }
    }

    fn settings(routes: Vec<RouteSettings>) -> Settings {
        let mut settings = Settings::defaults();
        settings.routes = routes;
        settings.upstreams.insert(
            "app".into(),
            toml::from_str::<UpstreamSettings>("servers = [{ url = \"http://127.0.0.1:1\" }]")
                .unwrap(),
        );
        settings
    }

    #[test]
    fn the_first_matching_route_wins_in_declared_order() {
        let table = RouteTable::new(&settings(vec![
            route(Some("api.example.com"), "/", RouteHandler::Proxy),
            route(None, "/api/", RouteHandler::Api),
            route(Some("*.example.com"), "/old", RouteHandler::Redirect),
            route(None, "/", RouteHandler::Static),
        ]))
        .unwrap();
        let action = |host, path| table.find(host, path).map(|route| route.action.clone());
        assert!(matches!(
            action("api.example.com", "/api/x"),
            Some(RouteAction::Proxy { .. })
        ));
        assert_eq!(action("example.com", "/api/x"), Some(RouteAction::Api));
        assert_eq!(action("example.com", "/api"), Some(RouteAction::Api));
        assert!(matches!(
            action("www.example.com", "/old/page"),
            Some(RouteAction::Redirect { .. })
        ));
        assert_eq!(
            action("example.com", "/old/page"),
            Some(RouteAction::Static { root: None })
        );
        assert_eq!(
            action("other.test", "/apiary"),
            Some(RouteAction::Static { root: None })
        );
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert_eq!(strip_path_prefix("/app", "/app"), Some(""));
        assert_eq!(strip_path_prefix("/app", "/app/x"), Some("/x"));
        assert_eq!(strip_path_prefix("/app", "/apple"), None);
        assert_eq!(strip_path_prefix("", "/anything"), Some("/anything"));
    }

    #[test]
    fn hosts_match_exactly_or_by_subdomain_ignoring_case() {
        let exact = HostPattern::parse(Some("Example.com"));
        assert!(exact.matches("example.com"));
        assert!(!exact.matches("www.example.com"));
        let wildcard = HostPattern::parse(Some("*.example.com"));
        assert!(wildcard.matches("a.example.com"));
        assert!(wildcard.matches("A.B.EXAMPLE.COM"));
        assert!(!wildcard.matches("example.com"));
        assert!(!wildcard.matches("badexample.com"));
    }

    #[test]
    fn invalid_routes_are_refused_with_their_key() {
        let mut proxy = route(None, "/x", RouteHandler::Proxy);
        proxy.upstream = Some("missing".into());
        let err = RouteTable::new(&settings(vec![proxy])).unwrap_err();
        assert!(err.to_string().contains("routes[0].upstream"), "{err}");

        let mut redirect = route(None, "/x", RouteHandler::Redirect);
        redirect.status = Some(200);
        let err = RouteTable::new(&settings(vec![redirect])).unwrap_err();
        assert!(err.to_string().contains("routes[0].status"), "{err}");

        let mut cached_static = route(None, "/", RouteHandler::Static);
        cached_static.cache = true;
        assert!(RouteTable::new(&settings(vec![cached_static])).is_err());

        let err =
            RouteTable::new(&settings(vec![route(None, "x", RouteHandler::Api)])).unwrap_err();
        assert!(err.to_string().contains("routes[0].path"), "{err}");
    }

    #[test]
    fn request_hosts_lose_their_port_and_case() {
        let mut head = actix_web::dev::RequestHead::default();
        head.headers.insert(
            actix_web::http::header::HOST,
            "Example.COM:8080".parse().unwrap(),
        );
        assert_eq!(request_host(&head), "Example.COM");
        head.headers
            .insert(actix_web::http::header::HOST, "[::1]:8080".parse().unwrap());
        assert_eq!(request_host(&head), "[::1]");
    }

    #[test]
    fn redirect_targets_take_the_request_uri() {
        assert_eq!(
            redirect_location("https://new.example.com{uri}", "/a?b=1"),
            "https://new.example.com/a?b=1"
        );
        assert_eq!(redirect_location("/elsewhere", "/a"), "/elsewhere");
    }
}
