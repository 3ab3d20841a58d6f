//! Who may call, from where, and with what: the two layers every request passes
//! before a handler (REST, MCP at `/mcp`, and anything else the app serves).
//!
//! - [`guard`] keeps web pages out: the `Host` header must name this service
//!   (`JESSE_MCP_ALLOWED_HOSTS`, loopback names by default; 421 otherwise, which
//!   stops DNS rebinding), a browser's `Origin` must be this service's own origin
//!   or one of `JESSE_MCP_ALLOWED_ORIGINS` (403 otherwise), and a body must carry
//!   its route's exact content type (415 otherwise), so no "simple" cross-site
//!   request (text/plain, form-encoded, multipart) reaches a handler.
//! - [`require_token`] checks bearer tokens (`JESSE_MCP_TOKENS`) and the scope
//!   each route needs. Tokens are kept as SHA-256 digests and compared in
//!   constant time; only a token's name ever reaches a log.
//!
//! The scope a route needs comes from the route table (`rest::routes`), the
//! same one the router and the OpenAPI document are built from.

use std::sync::Arc;

use axum::body::HttpBody;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Read jobs, results, candles, strategies, metrics.
    Read,
    /// Submit and cancel jobs of stored strategies, validate strategies statically.
    Run,
    /// Create, replace and delete strategies, and run submitted code (deep validation).
    StrategiesWrite,
    /// Everything, including candle uploads/deletes and schedules.
    Admin,
}

impl Scope {
    fn parse(text: &str) -> Option<Scope> {
        match text {
            "read" => Some(Scope::Read),
            "run" => Some(Scope::Run),
            "strategies:write" => Some(Scope::StrategiesWrite),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Run => "run",
            Scope::StrategiesWrite => "strategies:write",
            Scope::Admin => "admin",
        }
    }
}

/// The token of a request (in its extensions when tokens are configured): its
/// name, for logs and the audit trail, and its scopes.
#[derive(Debug, Clone)]
pub struct Granted {
    pub name: Arc<str>,
    pub scopes: Arc<[Scope]>,
}

impl Granted {
    pub fn allows(&self, needed: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&needed)
    }
}

/// Who a request acts as, for the audit trail: the token's name, or `local`
/// when no tokens are configured (loopback only) or over stdio.
pub fn actor(granted: Option<&Granted>) -> &str {
    granted.map_or("local", |g| &g.name)
}

/// Checks that `granted` (None: no tokens configured) allows `scope`.
pub fn check(granted: Option<&Granted>, scope: Scope) -> Result<(), ApiError> {
    match granted {
        Some(granted) if !granted.allows(scope) => {
            tracing::warn!(target: "audit", token = %granted.name, scope = scope.name(), "refused: missing scope");
            Err(forbidden(scope))
        }
        _ => Ok(()),
    }
}

struct TokenEntry {
    name: Arc<str>,
    digest: [u8; 32],
    scopes: Arc<[Scope]>,
}

/// The configured tokens, as digests. Empty means authentication is off
/// (loopback only).
#[derive(Clone, Default)]
pub struct Tokens(Arc<[TokenEntry]>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|e| (&*e.name, &*e.scopes)))
            .finish()
    }
}

impl Tokens {
    /// Parses `token=scope+scope,name:othertoken=admin`. A token without a name
    /// is named after its position (`token1`, `token2`, …).
    pub fn parse(spec: &str) -> anyhow::Result<Tokens> {
        let mut entries: Vec<TokenEntry> = Vec::new();
        for (index, entry) in spec
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            // Scopes never hold '=', tokens may (base64 padding).
            let (token, scopes) = entry.rsplit_once('=').ok_or_else(|| {
                anyhow::anyhow!(
                    "JESSE_MCP_TOKENS entries look like [name:]token=read+run; entry {} has no '='",
                    index + 1
                )
            })?;
            let (name, token) = match token.split_once(':') {
                Some((name, token)) => {
                    let valid = !name.is_empty()
                        && name.len() <= 64
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
                    if !valid {
                        anyhow::bail!(
                            "JESSE_MCP_TOKENS: entry {}: a token's name (before ':') is 1 to 64 of A-Z a-z 0-9 _ . -",
                            index + 1
                        );
                    }
                    (name.to_string(), token)
                }
                None => (format!("token{}", index + 1), token),
            };
            if token.len() < 16 {
                anyhow::bail!(
                    "JESSE_MCP_TOKENS: tokens must be at least 16 characters (entry {}, '{name}')",
                    index + 1
                );
            }
            let scopes = scopes
                .split('+')
                .map(|s| {
                    Scope::parse(s.trim()).ok_or_else(|| {
                        anyhow::anyhow!(
                            "JESSE_MCP_TOKENS: unknown scope '{s}' (read, run, strategies:write, admin)"
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            if entries.iter().any(|e| *e.name == *name) {
                anyhow::bail!("JESSE_MCP_TOKENS: two tokens are named '{name}'");
            }
            if entries.iter().any(|e| e.digest == digest) {
                anyhow::bail!("JESSE_MCP_TOKENS: token '{name}' is listed twice");
            }
            entries.push(TokenEntry {
                name: name.into(),
                digest,
                scopes: scopes.into(),
            });
        }
        Ok(Tokens(entries.into()))
    }

    pub fn enabled(&self) -> bool {
        !self.0.is_empty()
    }

    /// The token `presented` names, if any: its digest is compared with every
    /// configured digest in constant time, so neither the answer's timing nor
    /// which entry matched depends on how much of a guess was right.
    fn lookup(&self, presented: &str) -> Option<Granted> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = Choice::from(0);
        let mut which = 0u64;
        for (i, entry) in self.0.iter().enumerate() {
            let equal = entry.digest.ct_eq(&digest);
            which.conditional_assign(&(i as u64), equal);
            found |= equal;
        }
        if !bool::from(found) {
            return None;
        }
        let entry = &self.0[which as usize];
        Some(Granted {
            name: entry.name.clone(),
            scopes: entry.scopes.clone(),
        })
    }
}

/// A path segment of a route template.
enum Segment {
    Literal(String),
    /// `{param}` with an optional literal suffix (`{name}.png`).
    Param {
        suffix: String,
    },
}

fn segments(template: &str) -> Vec<Segment> {
    template
        .split('/')
        .skip(1)
        .map(
            |s| match s.strip_prefix('{').and_then(|s| s.split_once('}')) {
                Some((_, suffix)) => Segment::Param {
                    suffix: suffix.to_string(),
                },
                None => Segment::Literal(s.to_string()),
            },
        )
        .collect()
}

struct RouteRule {
    method: Method,
    segments: Vec<Segment>,
    scope: Option<Scope>,
    media_type: Option<&'static str>,
}

impl RouteRule {
    /// How many literal segments matched (more literal wins, as in the router),
    /// or None when the path does not match.
    fn matches(&self, method: &Method, path: &str) -> Option<usize> {
        let method_ok =
            self.method == method || (method == Method::HEAD && self.method == Method::GET);
        if !method_ok {
            return None;
        }
        let parts: Vec<&str> = path.split('/').skip(1).collect();
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut literal = 0;
        for (part, segment) in parts.iter().zip(&self.segments) {
            match segment {
                Segment::Literal(text) if text == part => literal += 1,
                Segment::Param { suffix }
                    if part.len() > suffix.len() && part.ends_with(suffix.as_str()) => {}
                _ => return None,
            }
        }
        Some(literal)
    }
}

/// What the route table says about a request: its scope and its body's type.
pub struct RouteRules(Vec<RouteRule>);

impl RouteRules {
    pub fn from_routes(routes: &[crate::rest::Route]) -> Self {
        let rules = routes
            .iter()
            .map(|route| RouteRule {
                method: route.method.clone(),
                segments: segments(&route.path),
                scope: route.scope,
                media_type: route.body.as_ref().map(|b| b.media_type),
            })
            .collect();
        Self(rules)
    }

    fn find(&self, method: &Method, path: &str) -> Option<&RouteRule> {
        self.0
            .iter()
            .filter_map(|rule| Some((rule.matches(method, path)?, rule)))
            .max_by_key(|(literal, _)| *literal)
            .map(|(_, rule)| rule)
    }

    /// The scope a request needs; None: open. Outside the table (MCP, 404s),
    /// reading needs `read` and anything else `run`; each MCP tool that changes
    /// something checks its own scope.
    fn scope(&self, method: &Method, path: &str) -> Option<Scope> {
        if let Some(rule) = self.find(method, path) {
            return rule.scope;
        }
        if path == "/mcp" || path.starts_with("/mcp/") {
            return Some(Scope::Read);
        }
        if method == Method::GET || method == Method::HEAD {
            Some(Scope::Read)
        } else {
            Some(Scope::Run)
        }
    }

    /// The content type a request's body must have: the route's, JSON elsewhere
    /// (MCP included).
    fn media_type(&self, method: &Method, path: &str) -> &'static str {
        self.find(method, path)
            .and_then(|rule| rule.media_type)
            .unwrap_or("application/json")
    }
}

/// A `host[:port]` the service answers for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Authority {
    host: String,
    port: Option<u16>,
}

impl Authority {
    fn parse(text: &str) -> Option<Authority> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        match axum::http::uri::Authority::try_from(text) {
            Ok(a) => Some(Authority {
                host: normalize_host(a.host()),
                port: a.port_u16(),
            }),
            // A bare IPv6 address (`::1`) is no authority, but a fine host name.
            Err(_) => Some(Authority {
                host: normalize_host(text),
                port: None,
            }),
        }
    }
}

fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

/// A browser origin: `null`, or scheme, host and port (None: any port).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    Null,
    Tuple {
        scheme: String,
        host: String,
        port: Option<u16>,
    },
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl Origin {
    /// Scheme, host and the port as written.
    fn parts(text: &str) -> Option<(String, String, Option<u16>)> {
        let uri = axum::http::Uri::try_from(text.trim()).ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let authority = uri.authority()?;
        if uri.path() != "/" && !uri.path().is_empty() {
            return None;
        }
        Some((
            scheme,
            normalize_host(authority.host()),
            authority.port_u16(),
        ))
    }

    /// An `Origin` header: its port is the scheme's default when absent.
    fn parse_header(text: &str) -> Option<Origin> {
        if text.trim().eq_ignore_ascii_case("null") {
            return Some(Origin::Null);
        }
        let (scheme, host, port) = Origin::parts(text)?;
        let port = port.or_else(|| default_port(&scheme));
        Some(Origin::Tuple { scheme, host, port })
    }

    /// An entry of `JESSE_MCP_ALLOWED_ORIGINS`: `scheme://host[:port]` (no port:
    /// the scheme's default), `scheme://host:*` (any port), or `null`.
    fn parse_allowed(text: &str) -> Option<Origin> {
        match text.trim().strip_suffix(":*") {
            Some(base) => match Origin::parts(base)? {
                (scheme, host, None) => Some(Origin::Tuple {
                    scheme,
                    host,
                    port: None,
                }),
                _ => None,
            },
            None => Origin::parse_header(text),
        }
    }

    fn allows(&self, origin: &Origin) -> bool {
        match (self, origin) {
            (Origin::Null, Origin::Null) => true,
            (
                Origin::Tuple { scheme, host, port },
                Origin::Tuple {
                    scheme: s,
                    host: h,
                    port: p,
                },
            ) => scheme == s && host == h && (port.is_none() || port == p),
            _ => false,
        }
    }
}

/// Everything the two layers decide by: tokens, the route table, the hosts and
/// origins allowed.
pub struct Gate {
    tokens: Tokens,
    rules: RouteRules,
    /// None: any Host (`JESSE_MCP_ALLOWED_HOSTS=*`).
    hosts: Option<Vec<Authority>>,
    origins: Vec<Origin>,
}

impl Gate {
    pub fn new(
        tokens: Tokens,
        rules: RouteRules,
        allowed_hosts: &[String],
        allowed_origins: &[String],
    ) -> anyhow::Result<Gate> {
        let hosts: Vec<&str> = allowed_hosts
            .iter()
            .map(|h| h.trim())
            .filter(|h| !h.is_empty())
            .collect();
        let hosts = if hosts.contains(&"*") {
            None
        } else if hosts.is_empty() {
            anyhow::bail!(
                "JESSE_MCP_ALLOWED_HOSTS is empty: list the host names clients use (e.g. localhost,127.0.0.1,::1,api.example.com), or * to accept any Host"
            );
        } else {
            Some(
                hosts
                    .iter()
                    .map(|h| {
                        Authority::parse(h).ok_or_else(|| {
                            anyhow::anyhow!("JESSE_MCP_ALLOWED_HOSTS: '{h}' is no host name")
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?,
            )
        };
        let origins = allowed_origins
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
            .map(|o| {
                Origin::parse_allowed(o).ok_or_else(|| {
                    anyhow::anyhow!(
                        "JESSE_MCP_ALLOWED_ORIGINS: '{o}' is no origin; write scheme://host[:port], scheme://host:* or null"
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Gate {
            tokens,
            rules,
            hosts,
            origins,
        })
    }

    pub fn tokens_enabled(&self) -> bool {
        self.tokens.enabled()
    }

    fn host_allowed(&self, host: &Authority) -> bool {
        match &self.hosts {
            None => true,
            Some(hosts) => hosts
                .iter()
                .any(|a| a.host == host.host && (a.port.is_none() || a.port == host.port)),
        }
    }

    fn origin_listed(&self, origin: &Origin) -> bool {
        self.origins.iter().any(|a| a.allows(origin))
    }
}

/// Whether the authority a request names carries user information
/// (`user@host`), which a Host header never may (RFC 9110 §7.2).
fn request_has_userinfo(request: &Request) -> bool {
    match request.headers().get(header::HOST) {
        Some(value) => value.as_bytes().contains(&b'@'),
        None => request
            .uri()
            .authority()
            .is_some_and(|a| a.as_str().contains('@')),
    }
}

/// The authority a request was sent to: its `Host` header, or HTTP/2's `:authority`.
fn request_authority(request: &Request) -> Option<Authority> {
    match request.headers().get(header::HOST) {
        Some(value) => Authority::parse(value.to_str().ok()?),
        None => request
            .uri()
            .authority()
            .and_then(|a| Authority::parse(a.as_str())),
    }
}

/// Same origin: the page was served by this very authority (whatever the scheme,
/// which a TLS proxy in front may change).
/// `http(s)://localhost`, `127.x.x.x` or `[::1]`, any port.
fn loopback_origin(origin: &Origin) -> bool {
    match origin {
        Origin::Null => false,
        Origin::Tuple { host, .. } => {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            host.eq_ignore_ascii_case("localhost")
                || bare
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    }
}

fn same_origin(origin: &Origin, host: &Authority) -> bool {
    match origin {
        Origin::Null => false,
        Origin::Tuple {
            scheme,
            host: h,
            port,
        } => *h == host.host && *port == host.port.or_else(|| default_port(scheme)),
    }
}

fn media_essence(headers: &HeaderMap) -> Option<Result<String, ()>> {
    let value = headers.get(header::CONTENT_TYPE)?;
    Some(
        value
            .to_str()
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            })
            .map_err(|_| ()),
    )
}

/// Headers a page on an allowed origin may send and read.
const CORS_ALLOW_HEADERS: &str = "authorization, content-type, if-match, idempotency-key, mcp-session-id, mcp-protocol-version, mcp-method, last-event-id";
const CORS_EXPOSE_HEADERS: &str = "etag, mcp-session-id, www-authenticate";

/// Headers a request may carry once only: with two, which one a check reads
/// and which one a later reader (a proxy, a handler) uses could differ.
const SINGLE_HEADERS: [header::HeaderName; 4] = [
    header::HOST,
    header::ORIGIN,
    header::CONTENT_TYPE,
    header::AUTHORIZATION,
];

/// Methods whose body is checked against the route's content type; others
/// (TRACE, CONNECT, extension methods) are served by no route and go on to
/// the router's 405.
fn takes_body(method: &Method) -> bool {
    [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(method)
}

/// The first layer: Host, Origin and content type (see the module docs).
pub async fn guard(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    if let Some(name) = SINGLE_HEADERS
        .iter()
        .find(|name| request.headers().get_all(*name).iter().nth(1).is_some())
    {
        tracing::warn!(header = %name, "refused: header sent twice");
        return ApiError::bad_request(
            "duplicate_header",
            format!("the {name} header was sent more than once; send it once"),
        )
        .with_details(serde_json::json!({"header": name.as_str()}))
        .into_response();
    }
    if request_has_userinfo(&request) {
        tracing::warn!("refused: Host with user information");
        return ApiError::bad_request(
            "invalid_host",
            "the Host header is host[:port]; user information ('name@') is not allowed in it",
        )
        .into_response();
    }
    let Some(host) = request_authority(&request) else {
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "host_not_allowed",
            "send a Host header naming this service",
        )
        .into_response();
    };
    if !gate.host_allowed(&host) {
        tracing::warn!(host = %host.host, "refused: Host not allowed");
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "host_not_allowed",
            format!(
                "this service does not answer for the host '{}'; the operator lists the host names it answers for in JESSE_MCP_ALLOWED_HOSTS",
                host.host
            ),
        )
        .into_response();
    }

    // A browser sends Origin with every cross-origin request and every POST;
    // clients that are no browser usually send none, and are not at risk.
    let mut cors_origin: Option<HeaderValue> = None;
    if let Some(value) = request.headers().get(header::ORIGIN) {
        let origin = value.to_str().ok().and_then(Origin::parse_header);
        // MCP clients' web UIs (the Inspector on localhost:6274) run on loopback
        // beside the service: the MCP transport spec allows loopback origins, and
        // a page there is a local process, which could call the API without a
        // browser anyway. The Host check above keeps rebound names out.
        let mcp = request.uri().path() == "/mcp" || request.uri().path().starts_with("/mcp/");
        let allowed = origin.as_ref().is_some_and(|o| {
            same_origin(o, &host) || gate.origin_listed(o) || (mcp && loopback_origin(o))
        });
        if !allowed {
            tracing::warn!(origin = ?value, "refused: cross-origin request");
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "cross-origin requests are refused; the operator lists the web origins allowed to call this service in JESSE_MCP_ALLOWED_ORIGINS",
            )
            .into_response();
        }
        if origin.is_some_and(|o| !same_origin(&o, &host)) {
            cors_origin = Some(value.clone());
        }
    }

    // A preflight from an allowed origin is answered here, before any token is
    // asked for (browsers send none with it).
    if let Some(origin) = &cors_origin
        && request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, DELETE"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(CORS_ALLOW_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        return response;
    }

    let method = request.method().clone();
    if takes_body(&method) {
        let expected = gate.rules.media_type(&method, request.uri().path());
        let body = request.body();
        let has_body = !body.is_end_stream() && body.size_hint().exact() != Some(0);
        let refused = match media_essence(request.headers()) {
            None => has_body.then(|| "none".to_string()),
            Some(Ok(essence)) => (essence != expected).then_some(essence),
            Some(Err(())) => Some("unreadable".to_string()),
        };
        if let Some(sent) = refused {
            let message = format!(
                "{method} {} takes a body of type {expected}: send the header Content-Type: {expected} (got {sent})",
                request.uri().path()
            );
            if has_body {
                drain(request).await;
            }
            return ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                message,
            )
            .with_details(serde_json::json!({"expected": expected}))
            .into_response();
        }
    }

    let mut response = next.run(request).await;
    if let Some(origin) = cors_origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(CORS_EXPOSE_HEADERS),
        );
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

/// How much of a refused body is read (and dropped) before answering, so the
/// client, still sending, gets the answer instead of a reset connection.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

async fn drain(request: Request) {
    use futures::StreamExt;
    let mut stream = request.into_body().into_data_stream();
    let mut read = 0;
    while read < DRAIN_LIMIT {
        match stream.next().await {
            Some(Ok(chunk)) => read += chunk.len(),
            _ => return,
        }
    }
}

/// The second layer: the bearer token and the scope of the route.
pub async fn require_token(
    State(gate): State<Arc<Gate>>,
    mut request: Request,
    next: Next,
) -> Response {
    if !gate.tokens.enabled() {
        return next.run(request).await;
    }
    let Some(scope) = gate.rules.scope(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(granted) = presented.and_then(|t| gate.tokens.lookup(t)) else {
        let error = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send a valid token as `Authorization: Bearer <token>` (configured by the operator in JESSE_MCP_TOKENS)",
        );
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(error.envelope()),
        )
            .into_response();
    };
    if let Err(refused) = check(Some(&granted), scope) {
        return refused.into_response();
    }
    request.extensions_mut().insert(granted);
    next.run(request).await
}

pub fn forbidden(scope: Scope) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("this token lacks the '{}' scope needed here", scope.name()),
    )
    .with_details(serde_json::json!({"missing_scope": scope.name()}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_found_by_digest_only() {
        let tokens =
            Tokens::parse("alice:aaaaaaaaaaaaaaaa1=read+run, bbbbbbbbbbbbbbbb2=admin").unwrap();
        let alice = tokens.lookup("aaaaaaaaaaaaaaaa1").unwrap();
        assert_eq!(&*alice.name, "alice");
        assert!(alice.allows(Scope::Run) && !alice.allows(Scope::StrategiesWrite));
        assert_eq!(&*tokens.lookup("bbbbbbbbbbbbbbbb2").unwrap().name, "token2");
        for wrong in [
            "aaaaaaaaaaaaaaaa",
            "aaaaaaaaaaaaaaaa2",
            "alice",
            "",
            "aaaaaaaaaaaaaaaa1 ",
        ] {
            assert!(tokens.lookup(wrong).is_none(), "{wrong:?}");
        }
        assert!(
            !format!("{tokens:?}").contains("aaaa"),
            "Debug shows no token"
        );
        assert!(Tokens::parse("x:aaaaaaaaaaaaaaaa1=read,x:cccccccccccccccc=read").is_err());
        assert!(Tokens::parse("aaaaaaaaaaaaaaaa1=read,aaaaaaaaaaaaaaaa1=admin").is_err());
        assert!(Tokens::parse("bad name:aaaaaaaaaaaaaaaa1=read").is_err());
        // Base64 padding stays part of the token.
        let padded = Tokens::parse("c2VjcmV0LXNlY3JldC1zZWNyZXQ==run").unwrap();
        assert!(padded.lookup("c2VjcmV0LXNlY3JldC1zZWNyZXQ=").is_some());
    }

    #[test]
    fn hosts_and_origins() {
        let gate = Gate::new(
            Tokens::default(),
            RouteRules(Vec::new()),
            &[
                "localhost".into(),
                "127.0.0.1".into(),
                "::1".into(),
                "api.example:8443".into(),
            ],
            &[
                "https://app.example".into(),
                "http://localhost:*".into(),
                "null".into(),
            ],
        )
        .unwrap();
        let host = |h: &str| Authority::parse(h).unwrap();
        assert!(gate.host_allowed(&host("127.0.0.1:8080")));
        assert!(gate.host_allowed(&host("[::1]:8080")));
        assert!(gate.host_allowed(&host("LOCALHOST")));
        assert!(gate.host_allowed(&host("api.example:8443")));
        assert!(!gate.host_allowed(&host("api.example:8080")));
        assert!(!gate.host_allowed(&host("evil.example")));
        assert!(!gate.host_allowed(&host("127.0.0.1.evil.example")));

        let origin = |o: &str| Origin::parse_header(o).unwrap();
        assert!(gate.origin_listed(&origin("https://app.example")));
        assert!(gate.origin_listed(&origin("https://app.example:443")));
        assert!(!gate.origin_listed(&origin("https://app.example:8443")));
        assert!(!gate.origin_listed(&origin("http://app.example")));
        assert!(gate.origin_listed(&origin("http://localhost:5173")));
        assert!(gate.origin_listed(&origin("null")));
        assert!(same_origin(
            &origin("http://127.0.0.1:8080"),
            &host("127.0.0.1:8080")
        ));
        assert!(same_origin(
            &origin("https://api.example"),
            &host("api.example")
        ));
        assert!(!same_origin(
            &origin("http://127.0.0.1:8081"),
            &host("127.0.0.1:8080")
        ));
        assert!(!same_origin(&origin("null"), &host("127.0.0.1:8080")));

        assert!(Gate::new(Tokens::default(), RouteRules(Vec::new()), &["".into()], &[]).is_err());
        assert!(
            Gate::new(
                Tokens::default(),
                RouteRules(Vec::new()),
                &["*".into()],
                &[]
            )
            .unwrap()
            .host_allowed(&host("anything.example"))
        );
        assert!(
            Gate::new(
                Tokens::default(),
                RouteRules(Vec::new()),
                &["*".into()],
                &["app.example".into()]
            )
            .is_err()
        );
    }

    #[test]
    fn scopes_come_from_the_route_table() {
        let rules = RouteRules::from_routes(&crate::rest::routes());
        let scope = |m: Method, p: &str| rules.scope(&m, p);
        assert_eq!(scope(Method::GET, "/health"), None);
        assert_eq!(scope(Method::GET, "/v1/jobs"), Some(Scope::Read));
        assert_eq!(scope(Method::POST, "/v1/backtests"), Some(Scope::Run));
        assert_eq!(
            scope(Method::POST, "/v1/strategies/validate"),
            Some(Scope::Run)
        );
        assert_eq!(
            scope(Method::PUT, "/v1/strategies/Foo"),
            Some(Scope::StrategiesWrite)
        );
        assert_eq!(
            scope(Method::DELETE, "/v1/strategies/Foo"),
            Some(Scope::StrategiesWrite)
        );
        assert_eq!(scope(Method::POST, "/v1/candles/csv"), Some(Scope::Admin));
        assert_eq!(
            scope(Method::DELETE, "/v1/candles/Binance%20Spot/BTC-USDT"),
            Some(Scope::Admin)
        );
        assert_eq!(scope(Method::PUT, "/v1/schedules"), Some(Scope::Admin));
        assert_eq!(scope(Method::POST, "/v1/compare"), Some(Scope::Read));
        assert_eq!(
            scope(Method::GET, "/v1/jobs/01J/charts/equity.png"),
            Some(Scope::Read)
        );
        assert_eq!(scope(Method::POST, "/mcp"), Some(Scope::Read));
        assert_eq!(scope(Method::POST, "/v1/nothing"), Some(Scope::Run));
        assert_eq!(
            rules.media_type(&Method::POST, "/v1/candles/csv"),
            "text/csv"
        );
        assert_eq!(
            rules.media_type(&Method::POST, "/v1/backtests"),
            "application/json"
        );
        assert_eq!(
            rules.media_type(&Method::POST, "/v1/jobs/01J/cancel"),
            "application/json"
        );
    }
}
