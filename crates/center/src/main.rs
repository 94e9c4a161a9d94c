//! The `porchlight-center` command: the reference city center (see the `porchlight_center`
//! library and docs/center.md). Parses the command line, sets up logging, runs a subcommand,
//! and maps an error to exit code 1 (other codes are outcomes: `porchlight_center::exit`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = porchlight_center::Cli::parse();
    init_tracing(cli.verbose);
    match porchlight_center::run(cli) {
        Ok(code) => code,
        Err(error) => {
            // Each variant's message already carries its cause.
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr: `info` by default, `-v` debug, `-vv` trace; `RUST_LOG` overrides.
fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
