//! Control-API routes of sharing: consent rules, requests and grants, pause, the audit log.
//!
//! Resident actions only: the center reaches the box through MQTT, never through this API.
//! Every change goes through [`crate::sharing::Sharing`], which records it in the audit chain.

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::audit::{AuditError, AuditKind, Filter};
use crate::consent::{CameraRules, ConsentError};
use crate::sharing::SharingError;

impl From<SharingError> for ApiError {
    fn from(e: SharingError) -> Self {
        match &e {
            SharingError::UnknownCamera(_) => ApiError::NotFound(e.to_string()),
            SharingError::Consent(ConsentError::NotFound { .. }) => {
                ApiError::NotFound(e.to_string())
            }
            SharingError::Consent(ConsentError::InvalidRules(_)) => {
                ApiError::BadRequest(e.to_string())
            }
            SharingError::Consent(_) => ApiError::Conflict(e.to_string()),
            SharingError::Audit(_) | SharingError::Db(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

/// Runs a blocking sharing call (sled flushes) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
}

/// `GET /api/v1/consent`: every camera's rules.
pub async fn consent(State(state): State<AppState>) -> Json<Value> {
    let rules: Vec<Value> = state
        .sharing
        .rules()
        .into_iter()
        .map(|(camera, rules)| json!({"camera": camera, "rules": rules}))
        .collect();
    Json(json!({"paused": state.sharing.is_paused(), "cameras": rules}))
}

/// `PUT /api/v1/consent/{camera}` with the complete rules as JSON.
pub async fn set_consent(
    State(state): State<AppState>,
    Path(camera): Path<String>,
    Json(rules): Json<CameraRules>,
) -> Result<Json<Value>, ApiError> {
    let s = state.sharing.clone();
    let cam = camera.clone();
    blocking(move || Ok(s.set_rules(&cam, rules)?)).await?;
    Ok(Json(
        json!({"camera": camera, "rules": state.sharing.rules().into_iter().find(|(c, _)| *c == camera).map(|(_, r)| r)}),
    ))
}

/// `GET /api/v1/requests`: pending requests and active grants.
pub async fn requests(State(state): State<AppState>) -> Json<Value> {
    Json(state.sharing.requests())
}

/// `POST /api/v1/requests/{id}/{action}` with action `approve`, `deny` or `revoke`.
pub async fn request_action(
    State(state): State<AppState>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let s = state.sharing.clone();
    let act = action.clone();
    let rid = id.clone();
    let out = blocking(move || match act.as_str() {
        "approve" => {
            let g = s.approve(&rid)?;
            Ok(json!({"id": rid, "status": "granted", "until": g.until_ms}))
        }
        "deny" => {
            s.deny(&rid)?;
            Ok(json!({"id": rid, "status": "denied"}))
        }
        "revoke" => {
            s.revoke(&rid)?;
            Ok(json!({"id": rid, "status": "revoked"}))
        }
        other => Err(ApiError::NotFound(format!(
            "no action {other:?} (approve, deny, revoke)"
        ))),
    })
    .await?;
    Ok(Json(out))
}

/// `POST /api/v1/pause` and `POST /api/v1/resume`.
pub async fn pause(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let s = state.sharing.clone();
    blocking(move || Ok(s.pause()?)).await?;
    Ok(Json(json!({"paused": true})))
}

/// `POST /api/v1/resume`.
pub async fn resume(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let s = state.sharing.clone();
    blocking(move || Ok(s.resume()?)).await?;
    Ok(Json(json!({"paused": false})))
}

/// Query of the audit routes.
#[derive(Deserialize, Debug, Default)]
pub struct AuditQuery {
    /// Only this camera.
    pub camera: Option<String>,
    /// Only this request.
    pub request: Option<String>,
    /// Only this kind (snake_case).
    pub kind: Option<AuditKind>,
    /// At most this many, newest first.
    pub limit: Option<usize>,
    /// `jsonl` (default) or `csv`, for export.
    pub format: Option<String>,
}

impl AuditQuery {
    fn filter(&self, newest_first: bool) -> Filter {
        Filter {
            camera: self.camera.clone(),
            request_id: self.request.clone(),
            kind: self.kind,
            limit: self.limit,
            newest_first,
            ..Filter::default()
        }
    }
}

/// `GET /api/v1/audit`: entries, newest first.
pub async fn audit(
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let s = state.sharing.clone();
    let entries = blocking(move || Ok(s.audit().list(&q.filter(true))?)).await?;
    Ok(Json(json!({ "entries": entries })))
}

/// `GET /api/v1/audit/verify`: checks the whole chain.
pub async fn audit_verify(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let s = state.sharing.clone();
    let result = blocking(move || Ok(s.audit().verify())).await?;
    Ok(Json(match result {
        Ok(r) => {
            json!({"ok": true, "entries": r.entries, "last_seq": r.last_seq, "last_hash": r.last_hash})
        }
        Err(e) => json!({"ok": false, "problem": e.to_string()}),
    }))
}

/// `GET /api/v1/audit/export?format=jsonl|csv`.
pub async fn audit_export(
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let s = state.sharing.clone();
    let csv = q.format.as_deref() == Some("csv");
    let body = blocking(move || {
        let mut out = Vec::new();
        let f = q.filter(false);
        if csv {
            s.audit().export_csv(&f, &mut out)?;
        } else {
            s.audit().export_jsonl(&f, &mut out)?;
        }
        Ok(out)
    })
    .await?;
    let ct = if csv {
        "text/csv"
    } else {
        "application/x-ndjson"
    };
    Ok(([(header::CONTENT_TYPE, ct)], body).into_response())
}
