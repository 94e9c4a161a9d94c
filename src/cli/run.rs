//! `porchlight run`: validate the configuration and run the daemon.

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;

/// Arguments of `porchlight run`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only check the configuration and print every problem; do not start.
    #[arg(long)]
    pub check: bool,
}

/// Runs the daemon until SIGINT/SIGTERM.
pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let cfg = Config::load_or_default(config)?.validate()?;
    if args.check {
        println!("configuration OK: {} camera(s)", cfg.cameras.len());
        return Ok(ExitCode::SUCCESS);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("porchlight")
        .build()?;
    rt.block_on(crate::daemon::run(cfg))?;
    Ok(ExitCode::SUCCESS)
}
