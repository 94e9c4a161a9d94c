//! `porchlight-center revoke-box GW`: the city takes a box off its network.
//!
//! Marks the box revoked in the registry (so `serve` refuses its renewals with `revoked` and
//! re-sends nothing for its claim code), then writes `crl.pem` in the state directory: a CRL
//! signed by the city CA listing **every** serial ever issued to every revoked box (renewals
//! included), with a fresh, growing CRL number and a `nextUpdate` of `--crl-days`. Point the
//! broker's `crlfile` at it and reload or restart the broker (Mosquitto reads it at start);
//! from then on the broker refuses the box's certificate at the TLS handshake.
//!
//! `revoke-box --crl-only` rewrites the CRL without revoking anything (a CRL past its
//! `nextUpdate` makes OpenSSL-based brokers refuse **every** client: re-issue it in time,
//! e.g. from a daily timer).

use std::process::ExitCode;

use super::ca::{now_s, CityCa, DirArg};
use super::store::{audit_line, write_atomic, CenterDir, Registry};
use super::CenterError;

/// Arguments of `revoke-box`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// State directory.
    #[command(flatten)]
    pub dir: DirArg,
    /// The gateway id to revoke.
    #[arg(required_unless_present = "crl_only")]
    pub gw: Option<String>,
    /// Only re-issue the CRL.
    #[arg(long, conflicts_with = "gw")]
    pub crl_only: bool,
    /// Days until the CRL's nextUpdate.
    #[arg(long, default_value_t = 30)]
    pub crl_days: u32,
}

/// Every (serial, revoked-at seconds) of revoked boxes.
pub fn revoked_serials(reg: &Registry) -> Vec<(String, i64)> {
    reg.boxes
        .iter()
        .filter_map(|b| b.revoked.map(|at| (b, at)))
        .flat_map(|(b, at)| b.serials.iter().map(move |s| (s.clone(), at / 1000)))
        .collect()
}

/// Revokes and writes the CRL.
pub fn run(args: Args) -> Result<ExitCode, CenterError> {
    if args.crl_days == 0 {
        return Err(CenterError::Usage("--crl-days must be at least 1".into()));
    }
    let dir = CenterDir::new(&args.dir.dir);
    let ca = CityCa::load(&dir)?;
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let valid_s = i64::from(args.crl_days) * 86_400;
    let (crl, n, count) = dir.update(|reg| {
        let mut audit = Vec::new();
        if let Some(gw) = &args.gw {
            let b = reg.box_mut(gw).ok_or_else(|| {
                CenterError::Usage(format!(
                    "no box {gw:?} in the registry (see `porchlight-center fleet --dir …`)"
                ))
            })?;
            if b.revoked.is_none() {
                b.revoked = Some(now_ms);
                audit.push(audit_line(
                    "revoked",
                    now_ms,
                    serde_json::json!({ "gateway_id": gw, "serials": b.serials }),
                ));
            } else {
                eprintln!("{gw} was already revoked; re-issuing the CRL");
            }
        }
        reg.crl_number += 1;
        let serials = revoked_serials(reg);
        let crl = ca.crl(&serials, reg.crl_number, now_s(), valid_s)?;
        audit.push(audit_line(
            "crl_issued",
            now_ms,
            serde_json::json!({ "crl_number": reg.crl_number, "serials": serials.len() }),
        ));
        Ok(((crl, reg.crl_number, serials.len()), audit))
    })?;
    write_atomic(&dir.crl(), crl.as_bytes(), 0o644)?;
    if let Some(gw) = &args.gw {
        tracing::info!(gateway_id = %gw, "Box revoked");
        println!("revoked: {gw}");
    }
    println!(
        "CRL #{n} with {count} serial(s): {} (point the broker's crlfile here and restart it)",
        dir.crl().display()
    );
    Ok(ExitCode::SUCCESS)
}
