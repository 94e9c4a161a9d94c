//! A small blocking client for the daemon's control API.
//!
//! It finds the daemon from the configuration (`api.listen`) and reads the token from
//! `{data_dir}/api.token`. Errors say what to do: start the daemon, use the same `--config`,
//! or run as a user who may read the token.

use std::path::Path;

use anyhow::{anyhow, Context};
use serde::de::DeserializeOwned;

use crate::api::ErrorBody;
use crate::config::Config;

/// A connection to the running daemon.
pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    /// Reads the configuration and token.
    pub fn from_config(config: Option<&Path>) -> anyhow::Result<Client> {
        let cfg = Config::load_or_default(config)?;
        let token_path = crate::api::token_path(&cfg.data_dir);
        let token = std::fs::read_to_string(&token_path).with_context(|| {
            format!(
                "cannot read the API token {} — is the daemon running with this --config, \
                 and may this user read its data directory?",
                token_path.display()
            )
        })?;
        // No proxy, whatever the environment says: the token and camera passwords go to the
        // daemon on loopback and nowhere else (ureq reads ALL_PROXY/HTTPS_PROXY by default).
        let agent = ureq::Agent::config_builder()
            .proxy(None)
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(600)))
            .build()
            .new_agent();
        Ok(Client {
            base: format!("http://{}", cfg.api.listen),
            token: token.trim().to_owned(),
            agent,
        })
    }

    /// GET a path (with query) and return the raw response after checking the status.
    pub fn get_raw(
        &self,
        path_and_query: &str,
    ) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let url = format!("{}{}", self.base, path_and_query);
        let resp = self
            .agent
            .get(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .call()
            .map_err(|e| {
                anyhow!(
                    "cannot reach the daemon at {}: {e} — is `porchlight run` running?",
                    self.base
                )
            })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.into_body().read_to_string().unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => Err(anyhow!("{}", body.error.message)),
            Err(_) => Err(anyhow!("the daemon answered {status}: {text}")),
        }
    }

    /// POST (or PUT, PATCH; DELETE without a body) JSON to a path and parse the JSON answer.
    pub fn send<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<T> {
        let url = format!("{}{}", self.base, path);
        let auth = format!("Bearer {}", self.token);
        let text = serde_json::to_string(body)?;
        let resp = match method {
            // ureq sends no body with DELETE.
            "DELETE" => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            _ => {
                let req = match method {
                    "PUT" => self.agent.put(&url),
                    "PATCH" => self.agent.patch(&url),
                    _ => self.agent.post(&url),
                };
                req.header("Authorization", &auth)
                    .header("Content-Type", "application/json")
                    .send(text.as_bytes())
            }
        };
        let resp = resp.map_err(|e| {
            anyhow!(
                "cannot reach the daemon at {}: {e} — is `porchlight run` running?",
                self.base
            )
        })?;
        let status = resp.status();
        let text = resp.into_body().read_to_string().unwrap_or_default();
        if !status.is_success() {
            return Err(match serde_json::from_str::<ErrorBody>(&text) {
                Ok(body) => anyhow!("{}", body.error.message),
                Err(_) => anyhow!("the daemon answered {status}: {text}"),
            });
        }
        serde_json::from_str(&text)
            .with_context(|| format!("unexpected answer from the daemon: {text}"))
    }

    /// GET a path and parse JSON.
    pub fn get<T: DeserializeOwned>(&self, path_and_query: &str) -> anyhow::Result<T> {
        let resp = self.get_raw(path_and_query)?;
        let text = resp
            .into_body()
            .read_to_string()
            .context("reading the daemon's answer")?;
        serde_json::from_str(&text)
            .with_context(|| format!("unexpected answer from the daemon: {text}"))
    }
}

/// Percent-encodes a query value.
pub fn q(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}
