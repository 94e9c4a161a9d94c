//! Control-API routes of cameras and discovery: list, add (by hand or from discovery), edit,
//! remove; the daemon's latest discovery results and "scan now".
//!
//! Cameras from the configuration file are listed like the others but are read-only here
//! (`409 conflict`: "managed by the configuration file"). Passwords go in (in a POST or PATCH
//! body) and never come out: responses carry `has_password` only, URLs carry no user info, and
//! audit entries name the camera id and how it was added, nothing else.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ApiError, AppState};
use crate::audit::{Actor, AuditKind, NewEntry};
use crate::cameras::registry::{OnvifRef, PendingMove, StoredCamera};
use crate::cameras::{scanner, CameraError, CameraHandle, Source};
use crate::clock::now_ms;
use crate::consent::CameraRules;
use crate::discovery::onvif::OnvifError;
use crate::discovery::DiscoveredCamera;
use crate::ingest::spec::{Record, Transport};
use crate::secret::Secret;

/// The routes, merged into [`super::routes`].
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/cameras", get(list).post(add))
        .route("/api/v1/cameras/{id}", get(one).patch(edit).delete(remove))
        .route("/api/v1/discovery", get(discovery))
        .route("/api/v1/discovery/scan", post(scan))
}

impl From<CameraError> for ApiError {
    fn from(e: CameraError) -> Self {
        match &e {
            CameraError::NotFound(_) => ApiError::NotFound(e.to_string()),
            CameraError::ConfigManaged(_) | CameraError::Exists(_) => {
                ApiError::Conflict(e.to_string())
            }
            CameraError::Invalid(_) => ApiError::BadRequest(e.to_string()),
            CameraError::Store(_) => ApiError::Internal(e.to_string()),
        }
    }
}

/// A JSON body, or `400 bad_request` saying what is wrong with it (as an [`ApiError`] body,
/// like every error here; axum's own rejection is plain text).
fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("the request body is not usable JSON: {e}")))
}

/// A camera-side failure while asking it over ONVIF: the camera is there but said no, or
/// could not be reached — well-formed request, nothing to give (`422 unavailable`).
fn onvif_error(id: &str, e: OnvifError) -> ApiError {
    ApiError::Unavailable(format!("asking camera {id} over ONVIF: {e}"))
}

/// The ONVIF side of an added camera, as shown.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct OnvifView {
    /// WS-Discovery endpoint reference (stable across address changes).
    pub endpoint: String,
    /// Its short discovery id (as `GET /api/v1/discovery` lists it).
    pub discovery_id: String,
    /// Device service address (no credentials).
    pub device_url: String,
    /// Manufacturer.
    pub manufacturer: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Serial number.
    pub serial: Option<String>,
    /// A move waiting for the resident (`approve_move` in a PATCH follows it).
    pub pending_move: Option<PendingMove>,
}

impl From<&OnvifRef> for OnvifView {
    fn from(o: &OnvifRef) -> Self {
        OnvifView {
            endpoint: o.endpoint.clone(),
            discovery_id: o.discovery_id.clone(),
            device_url: crate::secret::redact_url(&o.device_url),
            manufacturer: o.manufacturer.clone(),
            model: o.model.clone(),
            serial: o.serial.clone(),
            pending_move: o.pending_move.clone().map(|mut p| {
                p.device_url = crate::secret::redact_url(&p.device_url);
                p
            }),
        }
    }
}

/// One camera in `GET /api/v1/cameras`: health plus what is buffered, and its settings
/// without secrets.
#[derive(Serialize, Deserialize, Debug)]
pub struct CameraInfo {
    /// Health snapshot (`id`, `name`, `url`, `state`, `last_error`, codec, rates, counters).
    #[serde(flatten)]
    pub status: serde_json::Value,
    /// What `record` says goes to disk.
    pub record: Record,
    /// Oldest buffered time (UTC ms).
    pub buffered_from_ms: Option<i64>,
    /// Newest buffered time (UTC ms).
    pub buffered_to_ms: Option<i64>,
    /// Bytes buffered for this camera.
    pub buffered_bytes: u64,
    /// `config` (read-only here) or `added`.
    pub source: Source,
    /// Substream URL (no credentials).
    pub substream_url: Option<String>,
    /// RTSP user name, when set.
    pub username: Option<String>,
    /// Whether a password is set (the password itself is never returned).
    pub has_password: bool,
    /// `tcp` or `udp`.
    pub transport: Transport,
    /// The device address the resident approved (credentials go nowhere else).
    pub address: Option<std::net::IpAddr>,
    /// The ONVIF device, for cameras added from discovery.
    pub onvif: Option<OnvifView>,
}

fn info(c: &CameraHandle, usage: &crate::store::Usage) -> CameraInfo {
    let span = usage.cameras.get(&c.spec.id);
    // The health's URL is a RedactedUrl: no credentials can be in it.
    let status = serde_json::to_value(c.health.snapshot()).unwrap_or_default();
    CameraInfo {
        status,
        record: c.spec.record,
        buffered_from_ms: span.map(|s| s.first_ms),
        buffered_to_ms: span.map(|s| s.last_ms),
        buffered_bytes: span.map_or(0, |s| s.bytes),
        source: c.source,
        substream_url: c
            .spec
            .substream_url
            .as_ref()
            .map(|u| crate::secret::redact_url(u.as_str())),
        username: c.spec.credentials.as_ref().map(|c| c.username.clone()),
        has_password: c
            .spec
            .credentials
            .as_ref()
            .is_some_and(|c| !c.password.expose().is_empty()),
        transport: c.spec.transport,
        address: c
            .stored
            .as_ref()
            .and_then(|s| s.address)
            .or_else(|| crate::cameras::url_ip(&c.spec.url)),
        onvif: c
            .stored
            .as_ref()
            .and_then(|s| s.onvif.as_ref())
            .map(OnvifView::from),
    }
}

async fn usage(state: &AppState) -> Result<crate::store::Usage, ApiError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || store.usage())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// `GET /api/v1/cameras`.
async fn list(State(state): State<AppState>) -> Result<Json<Vec<CameraInfo>>, ApiError> {
    let usage = usage(&state).await?;
    Ok(Json(
        state
            .cameras
            .snapshot()
            .iter()
            .map(|c| info(c, &usage))
            .collect(),
    ))
}

/// `GET /api/v1/cameras/{id}`: one camera, as in the list.
async fn one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CameraInfo>, ApiError> {
    let cam = state
        .cameras
        .get(&id)
        .ok_or_else(|| CameraError::NotFound(id.clone()))?;
    let usage = usage(&state).await?;
    Ok(Json(info(&cam, &usage)))
}

/// Body of `POST /api/v1/cameras`: either `from_discovery` (+ credentials) or `url`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct AddCamera {
    /// Id of a camera in the latest discovery result; the streams are asked over ONVIF.
    pub from_discovery: Option<String>,
    /// Camera id (default: from the name).
    pub id: Option<String>,
    /// Display name (default: the discovered name, else the id).
    pub name: Option<String>,
    /// Main stream (manual add).
    pub url: Option<String>,
    /// Substream (manual add).
    pub substream_url: Option<String>,
    /// User name (RTSP and ONVIF).
    pub username: Option<String>,
    /// Password (never returned).
    pub password: Option<Secret>,
    /// `main` (default), `sub` or `off`.
    pub record: Option<Record>,
    /// Ingest AAC audio.
    pub audio: Option<bool>,
    /// `tcp` (default) or `udp`.
    pub transport: Option<Transport>,
}

/// `POST /api/v1/cameras` → `{"camera": CameraInfo}` (status 200).
async fn add(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body: AddCamera = parse_body(&body)?;
    let taken = state.cameras.ids();
    let (stored, how) = match &body.from_discovery {
        Some(did) => (
            from_discovery(&state, did, &body, &taken).await?,
            "discovery",
        ),
        None => (manual(&body, &taken)?, "manual"),
    };
    let id = stored.id.clone();
    // Added, then on the record; if the audit log fails the camera is taken out again.
    let sharing = state.sharing.clone();
    let entry = NewEntry::new(now_ms(), AuditKind::CameraAdded, Actor::Resident)
        .camera(&id)
        .detail(json!({"how": how, "onvif": stored.onvif.is_some()}));
    let handle = state.cameras.add(stored).await?;
    if let Err(e) = tokio::task::spawn_blocking(move || sharing.append_audit(entry))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
    {
        // Undo: a camera the audit log does not know about must not stream.
        let _ = state.cameras.remove(&id).await;
        return Err(ApiError::Internal(format!(
            "camera not added: the audit log failed: {e}"
        )));
    }
    let usage = usage(&state).await?;
    Ok(Json(json!({"camera": info(&handle, &usage)})))
}

fn manual(body: &AddCamera, taken: &[String]) -> Result<StoredCamera, ApiError> {
    let Some(url) = body.url.clone() else {
        return Err(ApiError::BadRequest(
            "give either url (rtsp://…) or from_discovery (an id from GET /api/v1/discovery)"
                .into(),
        ));
    };
    let id = match &body.id {
        Some(id) => id.clone(),
        None => crate::cameras::unique_id(
            &crate::cameras::id_from_name(body.name.as_deref(), "camera"),
            taken,
        ),
    };
    let address = url::Url::parse(&url)
        .ok()
        .and_then(|u| crate::cameras::url_ip(&u));
    Ok(StoredCamera {
        name: body.name.clone().unwrap_or_else(|| id.clone()),
        id,
        url,
        substream_url: body.substream_url.clone(),
        username: body.username.clone(),
        password: body.password.clone(),
        record: body.record.unwrap_or_default(),
        audio: body.audio.unwrap_or(false),
        transport: body.transport.unwrap_or_default(),
        address,
        onvif: None,
        added_ms: now_ms(),
    })
}

async fn from_discovery(
    state: &AppState,
    did: &str,
    body: &AddCamera,
    taken: &[String],
) -> Result<StoredCamera, ApiError> {
    if body.url.is_some() || body.substream_url.is_some() {
        return Err(ApiError::BadRequest(
            "from_discovery takes its URLs from the camera; leave out url and substream_url".into(),
        ));
    }
    // Not in the latest result (a camera that just came up, or the resident ran
    // `porchlight discover` first): one fresh scan, then give up.
    let found = match state.discovery.find(did) {
        Some(d) => Some(d),
        None => {
            state.discovery.scan().await;
            state.discovery.find(did)
        }
    };
    let Some(d) = found else {
        return Err(ApiError::NotFound(format!(
            "no camera {did:?} in the latest discovery result; run a scan (POST /api/v1/discovery/scan or `porchlight discover`)"
        )));
    };
    if let Some(existing) = state.discovery.added_as(&d) {
        return Err(ApiError::Conflict(format!(
            "discovered camera {did} is already added as {existing:?}"
        )));
    }
    let username = body.username.clone().unwrap_or_default();
    let password = body.password.clone().unwrap_or_else(|| Secret::new(""));
    let id = match &body.id {
        Some(id) => id.clone(),
        None => crate::cameras::unique_id(
            &crate::cameras::id_from_name(
                body.name.as_deref().or(d.name.as_deref()),
                &format!("cam-{}", d.id),
            ),
            taken,
        ),
    };
    if !d.onvif {
        // mDNS only (many doorbells): the announced RTSP service is the stream; there is no
        // ONVIF identity to follow across address changes.
        let Some(port) = d.rtsp_port else {
            return Err(ApiError::Unavailable(format!(
                "discovered camera {did} announces neither ONVIF nor an RTSP service; add it with its url"
            )));
        };
        let host = match d.address {
            std::net::IpAddr::V4(a) => a.to_string(),
            std::net::IpAddr::V6(a) => format!("[{a}]"),
        };
        let path = d.rtsp_path.clone().unwrap_or_default();
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        let mut manual_body = AddCamera {
            id: Some(id),
            name: body.name.clone().or_else(|| d.name.clone()),
            url: Some(format!("rtsp://{host}:{port}{path}")),
            username: body.username.clone(),
            password: body.password.clone(),
            record: body.record,
            audio: body.audio,
            transport: body.transport,
            ..AddCamera::default()
        };
        manual_body.username = manual_body.username.filter(|u| !u.is_empty());
        return manual(&manual_body, taken);
    }
    let (report, device_url) = scanner::probe_discovered(&d, &username, &password)
        .await
        .map_err(|e| onvif_error(did, e))?;
    let mut stored = StoredCamera {
        name: body
            .name
            .clone()
            .or_else(|| d.name.clone())
            .unwrap_or_else(|| id.clone()),
        id,
        url: String::new(),
        substream_url: None,
        username: Some(username).filter(|u| !u.is_empty()),
        password: Some(password).filter(|p| !p.expose().is_empty()),
        record: body.record.unwrap_or_default(),
        audio: body.audio.unwrap_or(false),
        transport: body.transport.unwrap_or_default(),
        address: Some(d.address),
        onvif: Some(onvif_ref(&d, &device_url)),
        added_ms: now_ms(),
    };
    scanner::apply_report(&mut stored, &report, d.address, device_url);
    Ok(stored)
}

fn onvif_ref(d: &DiscoveredCamera, device_url: &str) -> OnvifRef {
    OnvifRef {
        endpoint: d.key.clone(),
        discovery_id: d.id.clone(),
        device_url: device_url.to_owned(),
        serial: None,
        manufacturer: d.manufacturer.clone(),
        model: d.model.clone(),
        pending_move: None,
    }
}

/// Body of `PATCH /api/v1/cameras/{id}`: only the keys given change. `substream_url: null`
/// removes the substream; `password: ""` removes the password.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct EditCamera {
    /// Display name.
    pub name: Option<String>,
    /// Main stream.
    pub url: Option<String>,
    /// Substream (`null` removes it).
    #[serde(default, deserialize_with = "some_or_null")]
    pub substream_url: Option<Option<String>>,
    /// User name (`""` removes the credentials).
    pub username: Option<String>,
    /// Password (never returned).
    pub password: Option<Secret>,
    /// `main`, `sub` or `off`.
    pub record: Option<Record>,
    /// Ingest AAC audio.
    pub audio: Option<bool>,
    /// `tcp` or `udp`.
    pub transport: Option<Transport>,
    /// Follow the pending move (`onvif.pending_move`): ask the camera at its new address for
    /// its streams with the stored credentials.
    #[serde(default)]
    pub approve_move: bool,
}

fn some_or_null<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::<String>::deserialize(d)?))
}

/// `PATCH /api/v1/cameras/{id}` → `{"camera": CameraInfo}`.
async fn edit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body: EditCamera = parse_body(&body)?;
    let cam = state
        .cameras
        .get(&id)
        .ok_or_else(|| CameraError::NotFound(id.clone()))?;
    let Some(mut stored) = cam.stored.clone().filter(|_| cam.source == Source::Added) else {
        return Err(CameraError::ConfigManaged(id).into());
    };
    if body.approve_move {
        let Some(pending) = stored.onvif.as_ref().and_then(|o| o.pending_move.clone()) else {
            return Err(ApiError::Conflict(format!(
                "camera {id} has no pending move to approve"
            )));
        };
        scanner::repoint_to(
            &state.cameras,
            stored,
            pending.address,
            vec![pending.device_url.clone()],
        )
        .await
        .map_err(|e| {
            ApiError::Unavailable(format!("following camera {id} to its new address: {e}"))
        })?;
        let usage = usage(&state).await?;
        let now = state
            .cameras
            .get(&id)
            .ok_or_else(|| CameraError::NotFound(id.clone()))?;
        return Ok(Json(json!({"camera": info(&now, &usage)})));
    }
    if let Some(n) = body.name {
        stored.name = n;
    }
    if let Some(u) = body.url {
        // The resident typed this address: it becomes the approved one.
        stored.address = url::Url::parse(&u)
            .ok()
            .and_then(|x| crate::cameras::url_ip(&x))
            .or(stored.address);
        stored.url = u;
    }
    if let Some(s) = body.substream_url {
        stored.substream_url = s;
    }
    if let Some(u) = body.username {
        if u.is_empty() {
            stored.username = None;
            stored.password = None;
        } else {
            stored.username = Some(u);
        }
    }
    if let Some(p) = body.password {
        stored.password = Some(p).filter(|p| !p.expose().is_empty());
    }
    if let Some(r) = body.record {
        stored.record = r;
    }
    if let Some(a) = body.audio {
        stored.audio = a;
    }
    if let Some(t) = body.transport {
        stored.transport = t;
    }
    let handle = state.cameras.replace(stored).await?;
    let usage = usage(&state).await?;
    Ok(Json(json!({"camera": info(&handle, &usage)})))
}

/// `DELETE /api/v1/cameras/{id}` → `{"removed": id}`. The camera's stored video stays
/// exportable until quota or retention evicts it; its sharing rules return to deny.
async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match state.cameras.get(&id) {
        None => return Err(CameraError::NotFound(id).into()),
        Some(c) if c.source == Source::Config => return Err(CameraError::ConfigManaged(id).into()),
        Some(_) => {}
    }
    let sharing = state.sharing.clone();
    let cam = id.clone();
    // Deny by default again: a camera added later under the same id must not inherit
    // "always" from this one. Done first, while the camera still exists for sharing.
    tokio::task::spawn_blocking(move || -> Result<(), ApiError> {
        let rules = sharing.rules();
        if rules
            .iter()
            .any(|(c, r)| c == &cam && *r != CameraRules::default())
        {
            sharing.set_rules(&cam, CameraRules::default())?;
        }
        sharing.append_audit(
            NewEntry::new(now_ms(), AuditKind::CameraRemoved, Actor::Resident)
                .camera(&cam)
                .detail(json!({"video_kept_until_evicted": true})),
        )?;
        Ok(())
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    state.cameras.remove(&id).await?;
    Ok(Json(json!({"removed": id})))
}

/// One device in `GET /api/v1/discovery`.
#[derive(Serialize, Debug)]
pub struct DiscoveredView {
    /// What discovery saw (id, name, manufacturer, model, location, address, xaddrs, onvif,
    /// rtsp_port, rtsp_path, sources, key).
    #[serde(flatten)]
    pub camera: DiscoveredCamera,
    /// Whether it is already one of the box's cameras.
    pub added: bool,
    /// Which camera, when added.
    pub camera_id: Option<String>,
}

fn discovery_body(state: &AppState, r: Option<scanner::ScanResult>) -> serde_json::Value {
    let enabled = state.discovery.enabled();
    let Some(r) = r else {
        return json!({"enabled": enabled, "started_ms": null, "finished_ms": null, "error": null, "cameras": []});
    };
    let cams: Vec<DiscoveredView> = r
        .cameras
        .into_iter()
        .map(|c| {
            let camera_id = state.discovery.added_as(&c);
            DiscoveredView {
                added: camera_id.is_some(),
                camera_id,
                camera: c,
            }
        })
        .collect();
    json!({
        "enabled": enabled,
        "started_ms": r.started_ms,
        "finished_ms": r.finished_ms,
        "error": r.error,
        "cameras": cams,
    })
}

/// `GET /api/v1/discovery`: the latest result (empty before the first run).
async fn discovery(State(state): State<AppState>) -> Json<serde_json::Value> {
    let latest = state.discovery.latest();
    Json(discovery_body(&state, latest))
}

/// `POST /api/v1/discovery/scan`: run now (or join the run in flight) and answer its result;
/// takes about `[discovery] timeout`.
async fn scan(State(state): State<AppState>) -> Json<serde_json::Value> {
    let r = state.discovery.scan().await;
    Json(discovery_body(&state, Some(r)))
}
