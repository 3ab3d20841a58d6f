//! Bearer tokens with scopes, configured by the operator (`JESSE_MCP_TOKENS`).
//! With no tokens the service only listens on loopback; with tokens every route
//! but `/health` needs one, and each route (and each MCP tool) needs a scope.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Read jobs, results, candles, strategies, metrics.
    Read,
    /// Submit and cancel jobs, validate strategies.
    Run,
    /// Create, replace and delete strategies.
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

/// The scopes of the request's token (present in request extensions when auth is on).
#[derive(Debug, Clone)]
pub struct Granted(pub Vec<Scope>);

impl Granted {
    pub fn allows(&self, needed: Scope) -> bool {
        self.0.contains(&Scope::Admin) || self.0.contains(&needed)
    }
}

/// Token → scopes. Empty means authentication is off (loopback only).
#[derive(Debug, Clone, Default)]
pub struct Tokens(Arc<HashMap<String, Vec<Scope>>>);

impl Tokens {
    /// Parses `token=scope+scope,other=admin`.
    pub fn parse(spec: &str) -> anyhow::Result<Tokens> {
        let mut map = HashMap::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (token, scopes) = entry.split_once('=').ok_or_else(|| {
                anyhow::anyhow!(
                    "JESSE_MCP_TOKENS entries look like token=read+run; got one without '='"
                )
            })?;
            if token.len() < 16 {
                anyhow::bail!("JESSE_MCP_TOKENS: tokens must be at least 16 characters");
            }
            let scopes = scopes
                .split('+')
                .map(|s| Scope::parse(s.trim()).ok_or_else(|| anyhow::anyhow!("JESSE_MCP_TOKENS: unknown scope '{s}' (read, run, strategies:write, admin)")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            map.insert(token.to_string(), scopes);
        }
        Ok(Tokens(Arc::new(map)))
    }

    pub fn enabled(&self) -> bool {
        !self.0.is_empty()
    }
}

/// The scope a REST route needs.
fn needed(method: &Method, path: &str) -> Scope {
    let admin = (path == "/v1/candles/csv" && method == Method::POST)
        || (path.starts_with("/v1/candles/") && method == Method::DELETE)
        || path == "/v1/schedules" && method == Method::PUT;
    if admin {
        return Scope::Admin;
    }
    if path.starts_with("/v1/strategies/")
        && path != "/v1/strategies/validate"
        && (method == Method::PUT || method == Method::DELETE)
    {
        return Scope::StrategiesWrite;
    }
    // MCP needs `read` to connect; each mutating tool checks its own scope.
    if path.starts_with("/mcp") {
        return Scope::Read;
    }
    // A comparison reads stored results; it is a POST only for its list of ids.
    if path == "/v1/compare" {
        return Scope::Read;
    }
    if method != Method::GET && method != Method::HEAD {
        return Scope::Run;
    }
    Scope::Read
}

pub async fn require_token(
    State(tokens): State<Tokens>,
    mut request: Request,
    next: Next,
) -> Response {
    if !tokens.enabled() || request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(scopes) = presented.and_then(|t| tokens.0.get(t)) else {
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
    let granted = Granted(scopes.clone());
    let scope = needed(request.method(), request.uri().path());
    if !granted.allows(scope) {
        return forbidden(scope).into_response();
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
}
