//! `porchlight-center codes issue|list`: single-use, expiring claim codes.
//!
//! A code is [`CLAIM_LEN`] characters of [`CLAIM_ALPHABET`] (Crockford base32 without
//! I, L, O, U: 60 bits from the kernel CSPRNG, 5 bits a character, so every character is
//! uniform). It is stored in the registry ([`super::store`]) with its label, the resident's
//! registered location (kept at the center only; the box never sends or learns it) and its
//! expiry, and printed as `ABCD-EFGH-JKMN` for a letter or a label. `codes issue` takes the
//! registry lock like every writer, so it works while `serve` runs.

use std::process::ExitCode;

use porchlight_protocol::pairing::{display_claim, CLAIM_ALPHABET, CLAIM_LEN};
use porchlight_protocol::units::Dur;

use super::ca::DirArg;
use super::geo::LatLon;
use super::store::{audit_line, CenterDir, ClaimCode};
use super::CenterError;

/// Arguments of `codes`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: CodesCommand,
}

/// `codes` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum CodesCommand {
    /// Issue new claim codes (one line each: the code as printed for the resident).
    Issue(IssueArgs),
    /// List every code: state (unused, used, expired), label, location, expiry, box.
    List(ListArgs),
}

/// `codes issue`.
#[derive(clap::Args, Debug)]
pub struct IssueArgs {
    /// State directory.
    #[command(flatten)]
    pub dir: DirArg,
    /// How many codes (1-10000).
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// Free text kept with each code (a household, a reference number).
    #[arg(long)]
    pub label: Option<String>,
    /// The resident's registered address, `LAT,LON` in degrees (used by `fleet --near`).
    #[arg(long)]
    pub location: Option<LatLon>,
    /// How long a code stays usable.
    #[arg(long, default_value = "30d")]
    pub expires: Dur,
}

/// `codes list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// State directory.
    #[command(flatten)]
    pub dir: DirArg,
    /// One JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A fresh code from 8 random bytes (60 bits used).
pub fn new_code() -> Result<String, CenterError> {
    let bytes = super::random_bytes::<8>().map_err(|source| CenterError::File {
        what: "random source",
        path: "getrandom(2)".into(),
        source,
    })?;
    Ok(code_from_bits(u64::from_be_bytes(bytes)))
}

/// The code made of the low 60 bits of `bits`.
pub fn code_from_bits(bits: u64) -> String {
    (0..CLAIM_LEN)
        .map(|i| CLAIM_ALPHABET[((bits >> (5 * i)) & 31) as usize] as char)
        .collect()
}

/// A code's state at `now_ms`.
pub fn state(c: &ClaimCode, now_ms: i64) -> &'static str {
    if c.used.is_some() {
        "used"
    } else if now_ms >= c.expires {
        "expired"
    } else {
        "unused"
    }
}

/// Runs a `codes` subcommand.
pub fn run(args: Args) -> Result<ExitCode, CenterError> {
    match args.command {
        CodesCommand::Issue(a) => issue(a),
        CodesCommand::List(a) => list(a),
    }
}

fn issue(a: IssueArgs) -> Result<ExitCode, CenterError> {
    if !(1..=10_000).contains(&a.count) {
        return Err(CenterError::Usage("--count must be 1..=10000".into()));
    }
    if a.expires.0.as_secs() == 0 {
        return Err(CenterError::Usage("--expires must be at least 1s".into()));
    }
    let dir = CenterDir::new(&a.dir.dir);
    dir.check_initialized()?;
    let now = jiff::Timestamp::now().as_millisecond();
    let expires = now + a.expires.0.as_millis() as i64;
    let codes = dir.update(|reg| {
        let mut out = Vec::new();
        while out.len() < a.count as usize {
            let code = new_code()?;
            // 60 bits make a collision unlikely, not impossible: never hand out a code twice.
            if reg.codes.iter().any(|c| c.code == code) || out.contains(&code) {
                continue;
            }
            out.push(code);
        }
        for code in &out {
            reg.codes.push(ClaimCode {
                code: code.clone(),
                label: a.label.clone(),
                location: a.location,
                issued: now,
                expires,
                used: None,
            });
        }
        let line = audit_line(
            "codes_issued",
            now,
            serde_json::json!({
                "count": out.len(),
                "label": a.label,
                "expires": expires,
                // The codes themselves stay out of the audit log: they are secrets until used.
            }),
        );
        Ok((out, vec![line]))
    })?;
    for c in codes {
        println!("{}", display_claim(&c));
    }
    eprintln!(
        "Codes valid until {} (single use).",
        jiff::Timestamp::from_millisecond(expires)
            .map(|t| t.to_string())
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

fn list(a: ListArgs) -> Result<ExitCode, CenterError> {
    let dir = CenterDir::new(&a.dir.dir);
    dir.check_initialized()?;
    let reg = dir.read()?;
    let now = jiff::Timestamp::now().as_millisecond();
    if a.json {
        let rows: Vec<_> = reg
            .codes
            .iter()
            .map(|c| {
                serde_json::json!({
                    "code": display_claim(&c.code),
                    "state": state(c, now),
                    "label": c.label,
                    "location": c.location,
                    "issued": c.issued,
                    "expires": c.expires,
                    "gateway_id": c.used.as_ref().map(|u| u.gateway_id.clone()),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<14}  {:<7}  {:<24}  {:<22}  {:<20}  LABEL",
        "CODE", "STATE", "EXPIRES", "LOCATION", "BOX"
    );
    for c in &reg.codes {
        let exp = jiff::Timestamp::from_millisecond(c.expires)
            .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        println!(
            "{:<14}  {:<7}  {:<24}  {:<22}  {:<20}  {}",
            display_claim(&c.code),
            state(c, now),
            exp,
            c.location
                .map(|l| l.to_string())
                .unwrap_or_else(|| "-".into()),
            c.used
                .as_ref()
                .map(|u| u.gateway_id.as_str())
                .unwrap_or("-"),
            c.label.as_deref().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use porchlight_protocol::pairing::normalize_claim;

    #[test]
    fn codes_use_the_claim_alphabet_and_normalize_to_themselves() {
        assert_eq!(code_from_bits(0), "000000000000");
        assert_eq!(code_from_bits(u64::MAX), "ZZZZZZZZZZZZ");
        for _ in 0..200 {
            let c = new_code().unwrap();
            assert_eq!(normalize_claim(&display_claim(&c)).unwrap(), c);
        }
    }

    #[test]
    fn states_follow_use_and_expiry() {
        let mut c = ClaimCode {
            code: "X".into(),
            label: None,
            location: None,
            issued: 0,
            expires: 100,
            used: None,
        };
        assert_eq!(state(&c, 99), "unused");
        assert_eq!(state(&c, 100), "expired");
        c.used = Some(crate::store::CodeUse {
            at: 1,
            key_sha256: String::new(),
            gateway_id: "gw-1".into(),
        });
        assert_eq!(state(&c, 100), "used");
    }
}
