//! The control API: loopback HTTP + JSON, the way the `porchlight` CLI talks to the daemon
//! (sled allows one process per database, so the CLI cannot open the store itself).
//!
//! Every request must carry `Authorization: Bearer <token>`, where the token is the content of
//! `{data_dir}/api.token` (mode 0600, fresh at every daemon start): being able to read that
//! file is what makes a local user the box's administrator. Routes are listed in
//! `docs/api.md`. Errors are JSON `{"error": {"code": "...", "message": "..."}}`, mapped to
//! HTTP status in one place ([`ApiError`]).

pub mod cameras;
pub mod hosts;
pub mod listen;
pub mod pairing;
pub mod sharing;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::cameras::CameraSet;
use crate::export::{ExportError, ExportPlan};
use crate::sharing::Sharing;
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::store::Usage;

/// State shared by the control API and the daemon's tasks.
pub struct ApiState {
    /// The segment store.
    pub store: Arc<Store>,
    /// The current cameras (configuration file and added at run time) and their workers.
    pub cameras: Arc<CameraSet>,
    /// The daemon's camera discovery (latest results, scan now).
    pub discovery: Arc<crate::cameras::scanner::Scanner>,
    /// When the daemon started.
    pub started: Instant,
    /// The token every API request must carry.
    pub api_token: String,
    /// The city link: configured, paired, or not (yet).
    pub link: Arc<crate::pairing::link::CityLink>,
    /// Consent, requests, grants and the audit log.
    pub sharing: Arc<Sharing>,
    /// The listeners' connection budgets and counters.
    pub listeners: Arc<listen::Listeners>,
}

impl ApiState {
    /// The running city uplink, when the box is paired (or configured with an identity).
    pub fn uplink(&self) -> Option<crate::uplink::UplinkHandle> {
        self.link.uplink()
    }

    /// The camera with this id, as it is now.
    pub fn camera(&self, id: &str) -> Option<crate::cameras::CameraHandle> {
        self.cameras.get(id)
    }
}

/// Path of the API token file inside the data directory.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("api.token")
}

/// An API failure, mapped to an HTTP status in [`IntoResponse`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or wrong token.
    #[error("missing or wrong API token (see {{data_dir}}/api.token)")]
    Unauthorized,
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The request is well-formed but there is nothing to give (e.g. no video in range).
    #[error("{0}")]
    Unavailable(String),
    /// The request conflicts with the current state (e.g. approving an expired request).
    #[error("{0}")]
    Conflict(String),
    /// Something failed inside the daemon.
    #[error("{0}")]
    Internal(String),
    /// The request names another host (`Host` not on the listener's allowlist,
    /// `crate::api::hosts`): a DNS-rebinding page, or a name the box was not told about.
    #[error("this box does not answer to Host {0:?} (see [web] hosts in docs/web.md)")]
    BadHost(String),
    /// Pairing or unpairing failed; the code is the pairing error's own (`code_used`,
    /// `broker_unreachable`, `ca_mismatch`, `timeout`, …).
    #[error(transparent)]
    Pairing(#[from] crate::pairing::enroll::PairError),
}

#[derive(Serialize, Deserialize, Debug)]
/// The JSON error body.
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

#[derive(Serialize, Deserialize, Debug)]
/// What went wrong.
pub struct ErrorDetail {
    /// Stable machine-readable code.
    pub code: String,
    /// A sentence for people.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unavailable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unavailable"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::BadHost(_) => (StatusCode::MISDIRECTED_REQUEST, "bad_host"),
            ApiError::Pairing(e) => {
                use crate::pairing::enroll::PairError as P;
                let status = match e {
                    P::BadCode(_) | P::Setup(_) => StatusCode::BAD_REQUEST,
                    P::Refused { .. } | P::NotAuthorized(_) => StatusCode::UNPROCESSABLE_ENTITY,
                    P::Unreachable { .. } | P::CaMismatch { .. } | P::BadAnswer(_) => {
                        StatusCode::BAD_GATEWAY
                    }
                    P::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                    P::Configured | P::AlreadyPaired(_) | P::NotPaired => StatusCode::CONFLICT,
                    P::Identity(_) => StatusCode::INTERNAL_SERVER_ERROR,
                };
                (status, e.code())
            }
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message: self.to_string(),
            },
        };
        (status, Json(body)).into_response()
    }
}

impl From<ExportError> for ApiError {
    fn from(e: ExportError) -> Self {
        match e {
            ExportError::UnknownCamera(_) => ApiError::NotFound(e.to_string()),
            ExportError::BadRange(_) => ApiError::BadRequest(e.to_string()),
            ExportError::NothingInRange { .. } => ApiError::Unavailable(e.to_string()),
            ExportError::Store(_)
            | ExportError::Damaged { .. }
            | ExportError::Media(_)
            | ExportError::Io(_) => ApiError::Internal(e.to_string()),
        }
    }
}

pub(crate) type AppState = Arc<ApiState>;

/// Every control route, without authentication: [`router`] puts the bearer-token check in
/// front of it for the loopback listener, and the resident web UI (`crate::web`) puts its
/// session + CSRF check in front of the same routes. Areas with many routes live in their own
/// file and are merged here.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/uplink", get(uplink))
        .route("/api/v1/export/plan", get(export_plan))
        .route("/api/v1/export", get(export))
        .route("/api/v1/consent", get(sharing::consent))
        .route(
            "/api/v1/consent/{camera}",
            axum::routing::put(sharing::set_consent),
        )
        .route("/api/v1/requests", get(sharing::requests))
        .route(
            "/api/v1/requests/{id}/{action}",
            axum::routing::post(sharing::request_action),
        )
        .route("/api/v1/pause", axum::routing::post(sharing::pause))
        .route("/api/v1/resume", axum::routing::post(sharing::resume))
        .route("/api/v1/audit", get(sharing::audit))
        .route("/api/v1/audit/verify", get(sharing::audit_verify))
        .route("/api/v1/audit/export", get(sharing::audit_export))
        .merge(pairing::routes())
        .merge(cameras::routes())
}

/// The loopback control API on a listener bound to `listen`: [`routes`] behind the bearer
/// token, and everything (the fallback too) behind the `Host` allowlist
/// ([`crate::api::hosts::HostPolicy::api`]: loopback names with the listener's port), checked
/// first so a rebinding page learns nothing, not even whether its token guess was wrong.
pub fn router(state: AppState, listen: std::net::SocketAddr) -> Router {
    let hosts = Arc::new(crate::api::hosts::HostPolicy::api(listen));
    routes()
        .fallback(|| async { ApiError::NotFound("no such API route".into()) })
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(middleware::from_fn_with_state(
            hosts,
            crate::api::hosts::require_host,
        ))
        .with_state(state)
}

/// Serves the API until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let listen = listener.local_addr()?;
    let budget = state.listeners.budgets.api;
    let stats = state.listeners.api.clone();
    listen::serve(
        "api",
        listener,
        router(state, listen),
        budget,
        stats,
        shutdown,
    )
    .await
}

async fn require_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !crate::secret::constant_time_eq(given.as_bytes(), state.api_token.as_bytes()) {
        return ApiError::Unauthorized.into_response();
    }
    next.run(req).await
}

/// `GET /api/v1/status`.
#[derive(Serialize, Deserialize, Debug)]
pub struct StatusResponse {
    /// Daemon version.
    pub version: String,
    /// Seconds since start.
    pub uptime_s: u64,
    /// Paired with a city center (or given an identity in the configuration file).
    pub paired: bool,
    /// The city link: `disabled`, `connecting`, `connected` or `disconnected`.
    #[serde(default)]
    pub link: String,
    /// One line per camera.
    pub cameras: Vec<CameraSummary>,
    /// Store use.
    pub storage: Usage,
    /// The listeners' connection budgets, and what they shed.
    #[serde(default)]
    pub listeners: listen::ListenersReport,
}

/// A camera in the status summary.
#[derive(Serialize, Deserialize, Debug)]
pub struct CameraSummary {
    /// Id.
    pub id: String,
    /// Where its worker is.
    pub state: crate::ingest::health::CameraState,
    /// Last failure, in plain words.
    pub last_error: Option<String>,
}

async fn status(State(state): State<AppState>) -> Result<Json<StatusResponse>, ApiError> {
    let store = state.store.clone();
    let usage = tokio::task::spawn_blocking(move || store.usage())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let cameras = state
        .cameras
        .snapshot()
        .iter()
        .map(|c| {
            let s = c.health.snapshot();
            CameraSummary {
                id: s.id,
                state: s.state,
                last_error: s.last_error,
            }
        })
        .collect();
    Ok(Json(StatusResponse {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_s: state.started.elapsed().as_secs(),
        paired: state.link.status().state.has_identity(),
        link: state
            .uplink()
            .as_ref()
            .map_or(crate::uplink::LinkState::Disabled, |u| u.status().state)
            .as_str()
            .to_owned(),
        cameras,
        storage: usage,
        listeners: state.listeners.report(),
    }))
}

/// `GET /api/v1/uplink`: the city link's state, last error and outbox.
async fn uplink(
    State(state): State<AppState>,
) -> Result<Json<crate::uplink::LinkStatus>, ApiError> {
    Ok(Json(match &state.uplink() {
        None => crate::uplink::LinkStatus::disabled(),
        Some(u) => u.status(),
    }))
}

/// Query of the export routes.
#[derive(Deserialize, Debug)]
pub struct ExportQuery {
    /// Camera id.
    pub camera: String,
    /// Start, RFC 3339 or UTC milliseconds.
    pub from: String,
    /// End, RFC 3339 or UTC milliseconds.
    pub to: String,
}

fn parse_time(what: &str, s: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| ApiError::BadRequest(format!("{what} {s:?} is not an RFC 3339 time: {e}")))
}

fn plan_for(state: &ApiState, q: &ExportQuery) -> Result<ExportPlan, ApiError> {
    // A removed camera's video stays exportable until the store evicts it.
    if state.camera(&q.camera).is_none() && !state.store.usage().cameras.contains_key(&q.camera) {
        return Err(ExportError::UnknownCamera(q.camera.clone()).into());
    }
    let from = parse_time("from", &q.from)?;
    let to = parse_time("to", &q.to)?;
    Ok(crate::export::plan(&state.store, &q.camera, from, to)?)
}

async fn export_plan(
    State(state): State<AppState>,
    Query(q): Query<ExportQuery>,
) -> Result<Json<ExportPlan>, ApiError> {
    let st = state.clone();
    let plan = tokio::task::spawn_blocking(move || plan_for(&st, &q))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(plan))
}

async fn export(
    State(state): State<AppState>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let st = state.clone();
    let plan = tokio::task::spawn_blocking(move || plan_for(&st, &q))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    // Every local export is in the resident's audit log, before a byte leaves.
    let entry = crate::audit::NewEntry::new(
        crate::clock::now_ms(),
        crate::audit::AuditKind::ClipExported,
        crate::audit::Actor::Resident,
    )
    .camera(&plan.camera)
    .detail(serde_json::json!({
        "from_ms": plan.from_ms,
        "to_ms": plan.to_ms,
        "segments": plan.segments,
        "bytes": plan.bytes,
    }));
    let sharing = state.sharing.clone();
    tokio::task::spawn_blocking(move || sharing.append_audit(entry))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(format!("the export could not be audited: {e}")))?;
    let rx = crate::export::stream(state.store.clone(), plan).await?;
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let body = axum::body::Body::from_stream(chunks);
    Ok(([(header::CONTENT_TYPE, "video/mp4")], body).into_response())
}
