//! Control-API routes of pairing: where it stands, pair with a claim code, unpair.
//!
//! `POST /api/v1/pair` waits for the city's answer (up to `pairing.timeout`) and answers with
//! the new status, or with an error whose code a UI can show in plain words (`code_unknown`,
//! `code_used`, `code_expired`, `broker_unreachable`, `ca_mismatch`, `timeout`, …).

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::pairing::link::PairingStatus;

/// The pairing routes (merged into [`super::routes`]).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/pairing", get(status))
        .route("/api/v1/pair", post(pair))
        .route("/api/v1/unpair", post(unpair))
}

/// `GET /api/v1/pairing`.
async fn status(State(state): State<AppState>) -> Json<PairingStatus> {
    Json(state.link.status())
}

/// Body of `POST /api/v1/pair`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairBody {
    /// The claim code as the resident typed it.
    pub code: String,
    /// The city's pairing listener, `mqtts://host:port` (default: `pairing.broker`).
    #[serde(default)]
    pub broker: Option<String>,
    /// The city CA (PEM) that signs the pairing listener (default: `pairing.ca_file`).
    #[serde(default)]
    pub ca_pem: Option<String>,
}

/// `POST /api/v1/pair`.
async fn pair(
    State(state): State<AppState>,
    Json(body): Json<PairBody>,
) -> Result<Json<PairingStatus>, ApiError> {
    let status = state
        .link
        .pair(
            &body.code,
            body.broker.as_deref(),
            body.ca_pem.map(String::into_bytes),
        )
        .await?;
    Ok(Json(status))
}

/// `POST /api/v1/unpair`.
async fn unpair(State(state): State<AppState>) -> Result<Json<PairingStatus>, ApiError> {
    Ok(Json(state.link.unpair().await?))
}
