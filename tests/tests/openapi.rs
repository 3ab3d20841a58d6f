//! `GET /v1/openapi.json` from a running service: valid under a real OpenAPI 3.1
//! validator (openapi-spec-validator, from the pinned tool venv of
//! ops/tools-env.sh), and complete: every route of the route table the router is
//! built from (each one probed over HTTP for its scope and its error codes),
//! every job kind of the registry, every error code the sources construct, the
//! bearer scheme, and the MCP tools the MCP endpoint lists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use jesse_mcp_api::auth::Scope;
use jesse_mcp_api::openapi::{ERROR_CODES, JOB_ERROR_CODES, SECURITY_SCHEME};
use jesse_mcp_core::kinds::REGISTRY;
use jesse_mcp_tests::*;
use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::Value;

const READ: &str = "read-token-0123456789";
const RUN: &str = "run-token-0123456789";
const WRITE: &str = "write-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

fn token_of(scope: Scope) -> &'static str {
    match scope {
        Scope::Read => READ,
        Scope::Run => RUN,
        Scope::StrategiesWrite => WRITE,
        Scope::Admin => ADMIN,
    }
}

/// Runs openapi-spec-validator on `document`; `Err` holds its complaint.
async fn validate(document: &Value) -> Result<(), String> {
    let tools = tokio::process::Command::new(repo_root().join("ops/tools-env.sh"))
        .output()
        .await
        .expect("running ops/tools-env.sh");
    assert!(
        tools.status.success(),
        "ops/tools-env.sh failed: {}",
        String::from_utf8_lossy(&tools.stderr)
    );
    let python = String::from_utf8(tools.stdout).unwrap().trim().to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(document).unwrap()).unwrap();
    let out = tokio::process::Command::new(python)
        .args(["-m", "openapi_spec_validator", "--schema", "3.1"])
        .arg(&file)
        .output()
        .await
        .expect("running openapi_spec_validator");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.contains(": OK") {
        Ok(())
    } else {
        Err(said)
    }
}

/// Follows a local `$ref` (`#/components/schemas/X`).
fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => document
            .pointer(reference.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("unresolved $ref {reference}")),
        None => schema,
    }
}

fn strings(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_is_valid_and_complete() {
    let app = TestApp::spawn(Options {
        start_worker: false,
        tokens: format!("{READ}=read,{RUN}=run,{WRITE}=strategies:write,{ADMIN}=admin"),
        ..Default::default()
    })
    .await;
    let response = app
        .client
        .get(app.url("/v1/openapi.json"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    // Every reference resolves (composed request schemas included).
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r.clone());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&document, &mut all);
    for reference in &all {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("a reference outside components: {reference}"));
        assert!(
            document["components"]["schemas"].get(name).is_some(),
            "unresolved {reference}"
        );
    }

    // (a) A real validator accepts it, and would catch an undeclared path parameter.
    validate(&document)
        .await
        .unwrap_or_else(|e| panic!("the document is not valid OpenAPI 3.1: {e}"));
    let mut broken = document.clone();
    let params = broken["paths"]["/v1/jobs/{id}"]["get"]["parameters"]
        .as_array_mut()
        .expect("GET /v1/jobs/{id} has parameters");
    params.retain(|p| p["name"] != "id");
    let complaint = validate(&broken)
        .await
        .expect_err("the validator must refuse a path parameter that is not declared");
    assert!(
        complaint.contains("'id'"),
        "unexpected complaint: {complaint}"
    );

    // (b) Every route the router serves is documented, with its scope, and nothing else is.
    let routes = jesse_mcp_api::rest::routes();
    let mut documented: BTreeSet<(String, String)> = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let mut served: BTreeSet<(String, String)> = routes
        .iter()
        .map(|r| (r.method.to_string(), r.path.clone()))
        .collect();
    for method in ["GET", "POST", "DELETE"] {
        served.insert((method.into(), "/mcp".into()));
    }
    assert_eq!(
        served, documented,
        "routes served and routes documented differ"
    );
    for expected in [
        "/health",
        "/ready",
        "/metrics",
        "/v1/openapi.json",
        "/mcp",
        "/v1/jobs/{id}/children",
    ] {
        assert!(
            document["paths"].get(expected).is_some(),
            "{expected} missing"
        );
    }

    // The security scheme, and on every operation but /health.
    let scheme = &document["components"]["securitySchemes"][SECURITY_SCHEME];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    for route in &routes {
        let op = &document["paths"][&route.path][route.method.as_str().to_ascii_lowercase()];
        match route.scope {
            Some(scope) => {
                assert_eq!(op["x-required-scope"], scope.name(), "{}", route.path);
                assert_eq!(
                    op["security"][0][SECURITY_SCHEME][0],
                    scope.name(),
                    "{} {}",
                    route.method,
                    route.path
                );
            }
            None => assert_eq!(op["security"], serde_json::json!([]), "{}", route.path),
        }
    }
    assert_eq!(
        document["paths"]["/mcp"]["post"]["x-required-scope"],
        "read"
    );
    // /mcp answers each documented method (401 without a token; with one, the
    // MCP transport, never 404/405).
    for method in ["GET", "POST", "DELETE"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let without = app
            .client
            .request(method.clone(), app.url("/mcp"))
            .send()
            .await
            .unwrap();
        assert_eq!(without.status(), 401, "{method} /mcp without a token");
        let with = app
            .client
            .request(method.clone(), app.url("/mcp"))
            .bearer_auth(READ)
            .header("accept", "application/json, text/event-stream")
            .send()
            .await
            .unwrap();
        assert!(
            ![401, 403, 404, 405].contains(&with.status().as_u16()),
            "{method} /mcp is documented but answered {}",
            with.status()
        );
    }

    // Each route, requested: open to its documented scope, 403 to the others, 401
    // without a token; every error it answers with is among its documented codes.
    let scopes = [
        Scope::Read,
        Scope::Run,
        Scope::StrategiesWrite,
        Scope::Admin,
    ];
    for route in &routes {
        let path = route
            .path
            .replace("{id}", "01J00000000000000000000000")
            .replace("{exchange}", "Nowhere")
            .replace("{symbol}", "AAA-BBB")
            .replace("{name}", "NoSuchStrategy");
        let op = &document["paths"][&route.path][route.method.as_str().to_ascii_lowercase()];
        let request = |token: Option<&str>| {
            let mut request = app.client.request(route.method.clone(), app.url(&path));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            request
        };
        let answer = |response: reqwest::Response| async move {
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, body)
        };
        let check_documented = |status: u16, body: &Value, who: &str| {
            if status < 400 {
                assert!(
                    op["responses"].get(status.to_string()).is_some(),
                    "{} {path} ({who}): status {status} is not documented",
                    route.method
                );
                return;
            }
            let code = body["error"]["code"].as_str().unwrap_or_else(|| {
                panic!(
                    "{} {path} ({who}): {status} without the error envelope: {body}",
                    route.method
                )
            });
            let response = &op["responses"][status.to_string()];
            let codes = strings(
                &response["content"]["application/json"]["schema"]["properties"]["error"]["properties"]
                    ["code"]["enum"],
            );
            assert!(
                codes.contains(code),
                "{} {path} ({who}): answered {status} {code}, documented for {status}: {codes:?}",
                route.method
            );
        };
        let Some(scope) = route.scope else {
            let (status, body) = answer(request(None).send().await.unwrap()).await;
            assert_eq!(status, 200, "{path} is open: {body}");
            continue;
        };
        let (status, body) = answer(request(None).send().await.unwrap()).await;
        assert_eq!(status, 401, "{} {path} without a token", route.method);
        check_documented(status, &body, "no token");
        for other in scopes {
            let (status, body) = answer(request(Some(token_of(other))).send().await.unwrap()).await;
            if other == scope || other == Scope::Admin {
                assert!(
                    status != 401 && status != 403,
                    "{} {path}: documented scope {} refused: {status} {body}",
                    route.method,
                    other.name()
                );
                let code = body["error"]["code"].as_str();
                assert!(
                    code != Some("not_found") && code != Some("method_not_allowed"),
                    "{} {path} is documented but not served: {body}",
                    route.method
                );
            } else {
                assert_eq!(
                    status,
                    403,
                    "{} {path}: scope {} should be refused (documented: {})",
                    route.method,
                    other.name(),
                    scope.name()
                );
            }
            check_documented(status, &body, other.name());
        }
    }

    // Every job kind of the registry, and a submit route per submittable kind
    // whose request is the kind's (the same shape the MCP tool takes).
    let kinds: BTreeSet<String> = REGISTRY.iter().map(|k| k.name.to_string()).collect();
    let schemas = &document["components"]["schemas"];
    assert_eq!(strings(&schemas["JobKind"]["enum"]), kinds, "JobKind enum");
    let kind_filter = document["paths"]["/v1/jobs"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "kind")
        .expect("kind filter");
    assert_eq!(
        strings(&resolve(&document, &kind_filter["schema"])["enum"]),
        kinds
    );
    for view in ["JobView", "JobAccepted"] {
        let kind = serde_json::to_string(&schemas[view]["properties"]["kind"]).unwrap();
        let kind = format!("{kind}{}", schemas["JobKind"]);
        for name in &kinds {
            assert!(
                kind.contains(&format!("\"{name}\"")),
                "{view}.kind does not list {name}"
            );
        }
    }

    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", app.base))
        .auth_header(READ);
    let client =
        ().serve(StreamableHttpClientTransport::from_config(config))
            .await
            .expect("MCP session");
    let tools = client.list_all_tools().await.expect("tools/list");
    client.cancel().await.ok();
    let mcp = &document["paths"]["/mcp"]["post"];
    let listed = strings(&mcp["x-mcp-tools"]);
    let description = mcp["description"].as_str().unwrap();
    for tool in &tools {
        assert!(
            listed.contains(tool.name.as_ref())
                && description.contains(&format!("`{}`", tool.name)),
            "MCP tool {} missing from /mcp",
            tool.name
        );
    }
    assert_eq!(
        listed.len(),
        tools.len(),
        "/mcp lists tools the server does not"
    );

    for kind in REGISTRY.iter().filter(|k| k.submit.is_some()) {
        let submit = kind.submit.as_ref().unwrap();
        let op = &document["paths"][submit.path]["post"];
        assert!(
            op.is_object(),
            "no POST {} for kind {}",
            submit.path,
            kind.name
        );
        assert!(
            op["description"]
                .as_str()
                .unwrap()
                .contains(&format!("`{}`", kind.name))
        );
        let body = resolve(
            &document,
            &op["requestBody"]["content"]["application/json"]["schema"],
        );
        let fields: BTreeSet<String> = body["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{}: request schema without properties", submit.path))
            .keys()
            .cloned()
            .collect();
        if let Some(tool) = tools.iter().find(|t| t.name == submit.tool) {
            let tool_fields: BTreeSet<String> = tool
                .input_schema
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            assert_eq!(
                fields, tool_fields,
                "POST {} and MCP {} disagree on the request",
                submit.path, submit.tool
            );
        }
    }

    // Every error code the sources construct is documented with its status, and
    // every documented code is constructed somewhere.
    let error_codes: BTreeMap<String, u64> = ERROR_CODES
        .iter()
        .map(|c| (c.code.to_string(), u64::from(c.status)))
        .collect();
    let enum_codes = strings(&schemas["ErrorCode"]["enum"]);
    assert_eq!(
        enum_codes,
        error_codes.keys().cloned().collect::<BTreeSet<_>>(),
        "ErrorCode enum"
    );
    let job_codes = strings(&schemas["JobErrorCode"]["enum"]);
    assert_eq!(job_codes.len(), JOB_ERROR_CODES.len());
    let envelope = &schemas["ErrorEnvelope"]["properties"]["error"];
    assert_eq!(
        envelope["properties"]["code"]["$ref"],
        "#/components/schemas/ErrorCode"
    );
    let found = scan_error_codes(&repo_root());
    assert!(
        found.api.len() > 30,
        "the scan found too few codes: {:?}",
        found.api
    );
    for (code, (status, place)) in &found.api {
        let documented = error_codes.get(code).unwrap_or_else(|| {
            panic!("error code {code} ({place}) is not in the OpenAPI ErrorCode list")
        });
        if let Some(status) = status {
            assert_eq!(
                documented, status,
                "{code} ({place}) is documented with another status"
            );
        }
    }
    for (code, place) in &found.job {
        assert!(
            enum_codes.contains(code) || job_codes.contains(code),
            "job error code {code} ({place}) is neither an ErrorCode nor a JobErrorCode"
        );
    }
    for code in &enum_codes {
        assert!(
            found.api.contains_key(code),
            "ErrorCode {code} is documented but no source constructs it"
        );
    }
    for code in &job_codes {
        assert!(
            found.literals.contains(code),
            "JobErrorCode {code} is documented but appears in no source"
        );
    }
}

#[derive(Default)]
struct Found {
    /// Codes of `ApiError`s: code → (HTTP status if known, where).
    api: BTreeMap<String, (Option<u64>, String)>,
    /// Codes of `ErrorBody::new` (what failed jobs record).
    job: BTreeMap<String, String>,
    /// Every string literal that looks like a code (`"snake_case"`).
    literals: BTreeSet<String>,
}

/// Finds the codes the sources construct: `ApiError::invalid("code", ..)`,
/// `ApiError::new(StatusCode::X, "code", ..)`, `ErrorBody::new("code", ..)`, the
/// constructors with a fixed code (`unavailable`, `internal`), and the calls of
/// helpers that pass their own parameter on as the code (`fn invalid(code: &str,
/// ..) { ApiError::invalid(code, ..) }` → every `invalid("code", ..)` in that file).
fn scan_error_codes(root: &Path) -> Found {
    let mut found = Found::default();
    let mut files = Vec::new();
    for dir in ["api/src", "core/src", "worker/src"] {
        collect_rs(&root.join(dir), &mut files);
    }
    assert!(!files.is_empty());
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|file| {
            let name = file
                .strip_prefix(root)
                .unwrap_or(file)
                .display()
                .to_string();
            (name, std::fs::read_to_string(file).unwrap())
        })
        .collect();
    for (_, text) in &sources {
        for literal in text.split('"').skip(1).step_by(2) {
            if !literal.is_empty() && literal.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                found.literals.insert(literal.to_string());
            }
        }
        for (needle, code, status) in [
            ("ApiError::unavailable(", "unavailable", 503),
            ("ApiError::internal(", "internal", 500),
            ("ApiError::store_full(", "store_full", 507),
        ] {
            if text.contains(needle) {
                found
                    .api
                    .insert(code.to_string(), (Some(status), needle.to_string()));
            }
        }
    }
    let mut constructors: Vec<Constructor> = vec![
        Constructor::api("ApiError::invalid", 0, Status::Fixed(422)),
        Constructor::api("ApiError::bad_request", 0, Status::Fixed(400)),
        Constructor::api("ApiError::not_found", 0, Status::Fixed(404)),
        Constructor::api("ApiError::conflict", 0, Status::Fixed(409)),
        Constructor::api("ApiError::new", 1, Status::Arg(0)),
        Constructor {
            call: "ErrorBody::new".into(),
            code_arg: 0,
            status: Status::Fixed(0),
            job: true,
            file: None,
        },
    ];
    let mut next = 0;
    while next < constructors.len() {
        let constructor = constructors[next].clone();
        next += 1;
        for (name, text) in &sources {
            if constructor.file.as_ref().is_some_and(|f| f != name) {
                continue;
            }
            for (at, args) in calls(text, &constructor.call) {
                let place = format!("{name}:{}", text[..at].lines().count());
                let Some(code) = args.get(constructor.code_arg).map(|a| a.trim()) else {
                    continue;
                };
                if let Some(literal) = code.strip_prefix('"').and_then(|c| c.strip_suffix('"')) {
                    if constructor.job {
                        found.job.insert(literal.to_string(), place);
                    } else {
                        let status = match constructor.status {
                            Status::Fixed(0) => None,
                            Status::Fixed(status) => Some(status),
                            Status::Arg(index) => args.get(index).and_then(|a| status_named(a)),
                        };
                        found.api.insert(literal.to_string(), (status, place));
                    }
                    continue;
                }
                // A parameter passed on: follow the helper it belongs to.
                match enclosing_parameter(text, at, code) {
                    Some((helper, index)) => {
                        let helper = Constructor {
                            call: helper,
                            code_arg: index,
                            status: match constructor.status {
                                Status::Arg(_) => Status::Fixed(0),
                                fixed => fixed,
                            },
                            job: constructor.job,
                            file: Some(name.clone()),
                        };
                        if !constructors
                            .iter()
                            .any(|c| c.call == helper.call && c.file == helper.file)
                        {
                            constructors.push(helper);
                        }
                    }
                    // The constructors themselves, and job codes computed at run time.
                    None if constructor.job || name.ends_with("core/src/error.rs") => {}
                    None => panic!(
                        "{place}: an error code that is neither a literal nor a helper's parameter; the OpenAPI check cannot see it"
                    ),
                }
            }
        }
    }
    found
}

#[derive(Clone, Copy)]
enum Status {
    Fixed(u64),
    /// The status is this argument (`StatusCode::X`).
    Arg(usize),
}

#[derive(Clone)]
struct Constructor {
    call: String,
    code_arg: usize,
    status: Status,
    job: bool,
    /// A helper: only called in its own file.
    file: Option<String>,
}

impl Constructor {
    fn api(call: &str, code_arg: usize, status: Status) -> Self {
        Self {
            call: call.into(),
            code_arg,
            status,
            job: false,
            file: None,
        }
    }
}

/// The calls of `call` in `text` (not its definition, not a longer name, not
/// a method of that name): where each starts and its top-level arguments.
fn calls<'a>(text: &'a str, call: &str) -> Vec<(usize, Vec<&'a str>)> {
    let needle = format!("{call}(");
    let mut out = Vec::new();
    for (at, _) in text.match_indices(&needle) {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':' || c == '.')
            || text[..at].trim_end().ends_with("fn")
        {
            continue;
        }
        out.push((at, arguments(&text[at + needle.len()..])));
    }
    out
}

/// The top-level, comma-separated arguments up to the closing parenthesis.
fn arguments(text: &str) -> Vec<&str> {
    let mut args = Vec::new();
    let (mut depth, mut start, mut in_string, mut escaped) = (0i32, 0, false, false);
    for (i, c) in text.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth == 0 => {
                args.push(&text[start..i]);
                return args;
            }
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                args.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    args
}

/// If `identifier` is a parameter of the free function around `at`: that
/// function's name and the parameter's position.
fn enclosing_parameter(text: &str, at: usize, identifier: &str) -> Option<(String, usize)> {
    let definition = text[..at].rfind("fn ")?;
    let signature = &text[definition + 3..];
    let open = signature.find('(')?;
    let name = signature[..open].trim();
    let name = name.split('<').next()?.trim();
    let params = arguments(&signature[open + 1..]);
    let index = params.iter().position(|p| {
        p.split(':')
            .next()
            .map(|n| n.trim().trim_start_matches("mut "))
            == Some(identifier)
    })?;
    if params.iter().any(|p| p.contains("self")) {
        return None;
    }
    Some((name.to_string(), index))
}

fn status_named(expression: &str) -> Option<u64> {
    let name = expression.trim().rsplit("::").next()?;
    Some(match name {
        "BAD_REQUEST" => 400,
        "UNAUTHORIZED" => 401,
        "FORBIDDEN" => 403,
        "NOT_FOUND" => 404,
        "METHOD_NOT_ALLOWED" => 405,
        "CONFLICT" => 409,
        "PRECONDITION_FAILED" => 412,
        "PAYLOAD_TOO_LARGE" => 413,
        "UNSUPPORTED_MEDIA_TYPE" => 415,
        "UNPROCESSABLE_ENTITY" => 422,
        "INTERNAL_SERVER_ERROR" => 500,
        "SERVICE_UNAVAILABLE" => 503,
        _ => return None,
    })
}

fn collect_rs(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}
