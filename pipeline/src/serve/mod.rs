//! `quiver serve`: features over HTTP/JSON from the online store, read at request time.
//!
//! | endpoint | role | what |
//! |---|---|---|
//! | `POST /v1/features` | reader | `{view, entities, features?, at?}` → values with as-of time, version, epoch |
//! | `GET /v1/views` | reader | views, versions, keys, features, what the online store holds |
//! | `GET /` | reader | the status page |
//! | `GET /metrics` | reader | Prometheus text |
//! | `POST /v1/verify` | writer | `{view, at?, sample?}` → `quiver verify-online`'s report |
//! | `GET /v1/audit` | admin | the audit log |
//! | `GET /healthz`, `GET /readyz` | none | alive; every view written to the online store |
//!
//! Requests carry `Authorization: Bearer <token>`; tokens are configured by their SHA-256
//! under `serve.tokens`. Without any, the server only listens on a loopback address and lets
//! every local request in. Denied requests go to the store's audit log; tokens never appear
//! in any output.

pub mod auth;
pub mod metrics;
pub mod page;
pub mod tls;

use crate::audit::{AuditEntry, AuditLog};
use crate::compile::CompiledPipeline;
use crate::error::JobError;
use crate::online::read::{OnlineReader, OnlineView, ReadErrorKind, ReadRequest};
use crate::online::SharedOnline;
use auth::{Auth, Denied, Role};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use metrics::Metrics;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Entities one feature request may ask for.
pub const MAX_ENTITIES: usize = 10_000;

/// Reads of a local store with at most this many entities run on the server's own threads
/// (a few hundred microseconds); larger ones, and every read of a networked store, go to the
/// blocking pool so that no connection waits behind them.
const INLINE_READ_ENTITIES: usize = 256;

/// A running server's shared state.
pub struct Server {
    pipeline: String,
    reader: OnlineReader,
    auth: Auth,
    audit: AuditLog,
    metrics: Metrics,
    /// Per view, its `freshness_sla` in seconds.
    slas: Vec<Option<f64>>,
    /// The config's feature store (status page), when it has registered views.
    registry: crate::registry::Registry,
    /// The job running in this process, if any (`quiver run --serve`).
    run: Option<Arc<crate::run_gauges::RunGauges>>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

impl Server {
    /// A server of `pipeline`'s views over `online`; `listen` is where it will listen (a
    /// server without tokens refuses anything but a loopback address).
    pub fn new(
        pipeline: CompiledPipeline,
        online: SharedOnline,
        listen: &SocketAddr,
    ) -> Result<Self, JobError> {
        let config = &pipeline.loaded.config;
        let tokens = &config.serve.tokens;
        if tokens.is_empty() && !listen.ip().is_loopback() {
            return Err(JobError::Other(format!(
                "refusing to serve on {listen} without tokens: anyone who can reach it could read every feature. Add serve.tokens to the config (`quiver token` makes one), or listen on 127.0.0.1"
            )));
        }
        let auth = Auth::new(tokens, Some(Role::Admin))?;
        let state_cache = config.serve.state_cache.0;
        let slas = config
            .views
            .iter()
            .map(|v| v.freshness_sla.map(|d| d.as_micros() as f64 / 1e6))
            .collect();
        let registry = config.store_registry(None)?;
        let audit = AuditLog::of_store(registry.root());
        Ok(Server {
            pipeline: config.name.clone(),
            reader: OnlineReader::new(pipeline, online)?.with_state_cache(state_cache),
            auth,
            audit,
            metrics: Metrics::default(),
            slas,
            registry,
            run: None,
        })
    }

    /// Also shows the figures of the job running in this process on `/metrics`.
    pub fn with_run(mut self, gauges: Arc<crate::run_gauges::RunGauges>) -> Self {
        self.run = Some(gauges);
        self
    }

    /// Whether requests need a token.
    pub fn requires_tokens(&self) -> bool {
        self.auth.requires_tokens()
    }

    /// The routes.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/", get(status_page))
            .route("/v1/features", post(features))
            .route("/v1/views", get(views))
            .route("/v1/verify", post(verify))
            .route("/v1/audit", get(audit))
            .route("/metrics", get(metrics_page))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(ready))
            .with_state(self)
    }

    /// Who is calling, if they may do what needs `needed`; a refusal is audited and answered.
    fn guard(
        &self,
        headers: &HeaderMap,
        needed: Role,
        what: &str,
    ) -> Result<String, Box<Response>> {
        let header = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok());
        match self.auth.check(header, needed) {
            Ok(caller) => Ok(caller.name),
            Err(denied) => {
                let (status, who) = match &denied {
                    Denied::Forbidden { who, .. } => (StatusCode::FORBIDDEN, who.clone()),
                    Denied::Missing => (StatusCode::UNAUTHORIZED, "anonymous".to_string()),
                    Denied::Unknown => (StatusCode::UNAUTHORIZED, "unknown token".to_string()),
                };
                self.record(&AuditEntry::now(&who, what, "denied").detail(denied.to_string()));
                let mut response = error(status, denied.to_string());
                if status == StatusCode::UNAUTHORIZED {
                    response.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        "Bearer".parse().expect("a header"),
                    );
                }
                Err(Box::new(response))
            }
        }
    }

    /// Appends `entry` to the audit log; a log that cannot be written is reported, and the
    /// request is answered all the same.
    fn record(&self, entry: &AuditEntry) {
        if let Err(e) = self.audit.append(entry) {
            eprintln!("quiver serve: {e}");
        }
    }

    fn observe(&self, endpoint: &str, started: Instant, response: Response) -> Response {
        let seconds = started.elapsed().as_secs_f64();
        self.metrics
            .observe(endpoint, response.status().as_u16(), seconds);
        response
    }
}

/// Serves on `listener` (HTTPS when `tls` is given) until `shutdown` completes.
pub async fn serve(
    server: Server,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), JobError> {
    let app = Arc::new(server).router();
    let stopped = |e: std::io::Error| JobError::Other(format!("the HTTP server stopped: {e}"));
    match tls {
        Some(acceptor) => {
            let listener = tls::TlsListener::new(listener, acceptor).map_err(stopped)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(stopped)
        }
        None => axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(stopped),
    }
}

/// Binds the listening socket, with a clear error when the address is taken.
pub async fn bind(listen: &SocketAddr) -> Result<tokio::net::TcpListener, JobError> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| JobError::Other(format!("cannot listen on {listen}: {e}")))
}

/// Parses a listen address (`host:port`).
pub fn listen_address(text: &str) -> Result<SocketAddr, JobError> {
    use std::net::ToSocketAddrs;
    text.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            JobError::Other(format!(
                "`{text}` is not a listen address like 127.0.0.1:8080"
            ))
        })
}

/// The key values of one entity of a request, in the view's key order: a scalar for a view
/// with one key, an array in key order, or an object by key name.
fn entity_values(entity: &Value, keys: &[String]) -> Result<Vec<String>, String> {
    let scalar = |v: &Value, what: &str| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("{what} must be a string or a number, not {other}")),
    };
    match entity {
        Value::Array(values) => values.iter().map(|v| scalar(v, "a key value")).collect(),
        Value::Object(fields) => keys
            .iter()
            .map(|k| match fields.get(k) {
                Some(v) => scalar(v, &format!("key `{k}`")),
                None => Err(format!("entity {entity} has no key `{k}`")),
            })
            .collect(),
        v if keys.len() == 1 => Ok(vec![scalar(v, "an entity")?]),
        v => Err(format!(
            "entity {v}: the view is keyed by {}; give an object or an array of its values",
            keys.join(", ")
        )),
    }
}

/// A request body: a JSON object (`shape` names its fields, for the message).
fn json_object(body: &[u8], shape: &str) -> Result<serde_json::Map<String, Value>, String> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(format!("the body must be a JSON object {shape}")),
        Err(e) => Err(format!("the body is not JSON: {e}")),
    }
}

/// Refuses a field of a request body that is not among `allowed`.
fn known_fields(fields: &serde_json::Map<String, Value>, allowed: &[&str]) -> Result<(), String> {
    match fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(format!(
            "unknown field `{unknown}`; the fields are {}",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

/// The required `view` field of a request body.
fn view_field(fields: &serde_json::Map<String, Value>) -> Result<&str, String> {
    fields
        .get("view")
        .and_then(Value::as_str)
        .ok_or_else(|| "`view` (a string) is required".to_string())
}

/// The optional `at` field of a request body: an RFC 3339 time, in µs.
fn time_field(fields: &serde_json::Map<String, Value>) -> Result<Option<i64>, String> {
    match fields.get("at") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(t)) => quiver_connectors::parse_rfc3339_micros(t)
            .map(Some)
            .ok_or_else(|| {
                format!("`at` `{t}` is not an RFC 3339 time, e.g. 2026-01-05T10:00:00Z")
            }),
        Some(other) => Err(format!("`at` must be an RFC 3339 time string, not {other}")),
    }
}

/// The read a feature request's JSON body asks for, and its view; a view the server does
/// not have is 404, anything else wrong 400.
async fn read_request(
    server: &Server,
    body: &[u8],
) -> Result<(Arc<OnlineView>, ReadRequest), (StatusCode, String)> {
    let bad = |e: String| (StatusCode::BAD_REQUEST, e);
    let fields = json_object(body, "{view, entities, features?, at?}").map_err(bad)?;
    let view = view_field(&fields).map_err(bad)?;
    let online = match server.reader.resolve(view).await {
        Ok(v) => v,
        Err(e) if e.kind == ReadErrorKind::Internal => {
            return Err((StatusCode::INTERNAL_SERVER_ERROR, e.message))
        }
        Err(e) => return Err((StatusCode::NOT_FOUND, e.message)),
    };
    let request = parse_read(&fields, view, online.view.key_names()).map_err(bad)?;
    Ok((online, request))
}

/// The rest of [`read_request`], once the view and its keys are known.
fn parse_read(
    fields: &serde_json::Map<String, Value>,
    view: &str,
    keys: &[String],
) -> Result<ReadRequest, String> {
    known_fields(fields, &["view", "entities", "features", "at"])?;
    let entities = fields
        .get("entities")
        .and_then(Value::as_array)
        .ok_or("`entities` (an array) is required")?;
    if entities.len() > MAX_ENTITIES {
        return Err(format!(
            "{} entities in one request; at most {MAX_ENTITIES}",
            entities.len()
        ));
    }
    let entities = entities
        .iter()
        .map(|e| entity_values(e, keys))
        .collect::<Result<Vec<_>, _>>()?;
    let features = match fields.get("features") {
        None | Some(Value::Null) => None,
        Some(Value::Array(f)) => Some(
            f.iter()
                .map(|f| {
                    f.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("feature names are strings, not {f}"))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(other) => return Err(format!("`features` must be an array of names, not {other}")),
    };
    let at = time_field(fields)?;
    Ok(ReadRequest {
        view: view.to_string(),
        entities,
        features,
        at,
    })
}

async fn features(State(server): State<Arc<Server>>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let endpoint = "/v1/features";
    if let Err(denied) = server.guard(&headers, Role::Reader, "POST /v1/features") {
        return server.observe(endpoint, started, *denied);
    }
    let (online, request) = match read_request(&server, &body).await {
        Ok(r) => r,
        Err((status, e)) => return server.observe(endpoint, started, error(status, e)),
    };
    let entities = request.entities.len();
    let read = if entities <= INLINE_READ_ENTITIES && server.reader.store().0.is_local() {
        // A small read of a local store takes well under a millisecond of CPU: handing it to
        // the blocking pool would cost two thread wake-ups more than that saves.
        Ok(server.reader.read(&online, &request))
    } else {
        let reading = Arc::clone(&server);
        tokio::task::spawn_blocking(move || reading.reader.read(&online, &request)).await
    };
    let response = match read {
        Ok(Ok(values)) => {
            server.metrics.entities_read(entities);
            axum::Json(values).into_response()
        }
        Ok(Err(e)) => {
            let status = match e.kind {
                ReadErrorKind::BadRequest => StatusCode::BAD_REQUEST,
                ReadErrorKind::NotFound => StatusCode::NOT_FOUND,
                ReadErrorKind::Internal => {
                    eprintln!("quiver serve: {}", e.message);
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            };
            error(status, e.message)
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the read failed: {e}"),
        ),
    };
    server.observe(endpoint, started, response)
}

/// Each view with what the online store holds for it.
fn view_list(server: &Server) -> Result<Vec<Value>, JobError> {
    let tables = server.reader.store().0.tables()?;
    Ok(server
        .reader
        .views()
        .iter()
        .map(|v| {
            let stamp = v.stamp_in(&tables);
            json!({
                "view": v.view.name(),
                "version": v.version,
                "keys": v.view.key_names(),
                "features": v.view.point_in_time_features(),
                "shards": v.shards(),
                "online": stamp.map(|s| json!({
                    "epoch": s.epoch,
                    "run": s.run,
                    "entities": s.keys,
                    "watermark": s.watermark.map(crate::lineage::format_micros),
                    "committed_at": crate::lineage::format_micros(s.committed_unix_ms as i64 * 1000),
                })),
            })
        })
        .collect())
}

async fn views(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let response = match server.guard(&headers, Role::Reader, "GET /v1/views") {
        Err(denied) => *denied,
        Ok(_) => match view_list(&server) {
            Ok(list) => {
                axum::Json(json!({ "pipeline": server.pipeline, "views": list })).into_response()
            }
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
    };
    server.observe("/v1/views", started, response)
}

/// The options of a verify request's JSON body.
fn verify_options(body: &[u8]) -> Result<crate::online::verify::VerifyOptions, String> {
    let fields = json_object(body, "{view, at?, sample?}")?;
    known_fields(&fields, &["view", "at", "sample"])?;
    let view = view_field(&fields)?;
    let at = time_field(&fields)?;
    let sample = match fields.get("sample") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| format!("`sample` must be a positive integer, not {v}"))?
                as usize,
        ),
    };
    Ok(crate::online::verify::VerifyOptions {
        view: view.to_string(),
        at,
        sample,
        limit: 100,
        rtol: 1e-9,
    })
}

async fn verify(State(server): State<Arc<Server>>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let who = match server.guard(&headers, Role::Writer, "POST /v1/verify") {
        Ok(who) => who,
        Err(denied) => return server.observe("/v1/verify", started, *denied),
    };
    let options = match verify_options(&body) {
        Ok(o) => o,
        Err(e) => return server.observe("/v1/verify", started, error(StatusCode::BAD_REQUEST, e)),
    };
    let report =
        crate::online::verify::verify_online(&server.reader, &server.registry, &options).await;
    let entry = match &report {
        Ok(r) if r.mismatched == 0 => AuditEntry::now(&who, "POST /v1/verify", "ok"),
        Ok(r) => AuditEntry::now(&who, "POST /v1/verify", "ok")
            .detail(format!("{} mismatches", r.mismatched)),
        Err(e) => AuditEntry::now(&who, "POST /v1/verify", "failed").detail(e.to_string()),
    }
    .target(options.view.clone());
    server.record(&entry);
    let response = match report {
        Ok(report) => axum::Json(report).into_response(),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    };
    server.observe("/v1/verify", started, response)
}

async fn audit(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let response = match server.guard(&headers, Role::Admin, "GET /v1/audit") {
        Err(denied) => *denied,
        Ok(_) => match server.audit.read() {
            Ok(entries) => axum::Json(json!({ "entries": entries })).into_response(),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
    };
    server.observe("/v1/audit", started, response)
}

async fn metrics_page(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let response = match server.guard(&headers, Role::Reader, "GET /metrics") {
        Err(denied) => *denied,
        Ok(_) => match server.reader.store().0.tables() {
            Ok(tables) => (
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                server.metrics.render(
                    &tables,
                    server.run.as_ref().map(|g| g.get()).as_ref(),
                    server.reader.state_cache_counts(),
                    crate::clock::now_ms(),
                ),
            )
                .into_response(),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
    };
    server.observe("/metrics", started, response)
}

async fn ready(State(server): State<Arc<Server>>) -> Response {
    let tables = match server.reader.store().0.tables() {
        Ok(t) => t,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let missing: Vec<&str> = server
        .reader
        .views()
        .iter()
        .filter(|v| v.stamp_in(&tables).is_none())
        .map(|v| v.view.name())
        .collect();
    if missing.is_empty() {
        "ready\n".into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not written to the online store yet: {} (run `quiver run` on this config)",
                missing.join(", ")
            ),
        )
    }
}

async fn status_page(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    if let Err(denied) = server.guard(&headers, Role::Reader, "GET /") {
        return server.observe("/", started, *denied);
    }
    let tables = server.reader.store().0.tables().unwrap_or_default();
    // The offline store's status, when the config's store has these views registered.
    let offline = crate::registry::status::status(&server.registry, None).unwrap_or_default();
    let views: Vec<page::PageView> = server
        .reader
        .views()
        .iter()
        .zip(&server.slas)
        .map(|(v, sla)| page::PageView {
            name: v.view.name().to_string(),
            version: v.version.clone(),
            keys: v.view.key_names().to_vec(),
            features: v.view.point_in_time_features(),
            online: v.stamp_in(&tables),
            sla_s: *sla,
            offline: offline.iter().find(|s| s.view == v.view.name()).cloned(),
        })
        .collect();
    let html = page::render(&server.pipeline, &views, crate::clock::now_ms());
    let response = axum::response::Html(html).into_response();
    server.observe("/", started, response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_come_as_scalars_arrays_or_objects() {
        let one = vec!["card_id".to_string()];
        let two = vec!["a".to_string(), "b".to_string()];
        assert_eq!(entity_values(&json!("c1"), &one).unwrap(), vec!["c1"]);
        assert_eq!(entity_values(&json!(42), &one).unwrap(), vec!["42"]);
        assert_eq!(
            entity_values(&json!({"b": 2, "a": "x"}), &two).unwrap(),
            vec!["x", "2"]
        );
        assert_eq!(
            entity_values(&json!(["x", 2]), &two).unwrap(),
            vec!["x", "2"]
        );
        assert!(entity_values(&json!("x"), &two)
            .unwrap_err()
            .contains("keyed by a, b"));
        assert!(entity_values(&json!({"a": 1}), &two)
            .unwrap_err()
            .contains("no key `b`"));
        assert!(entity_values(&json!(null), &one).is_err());
    }
}
