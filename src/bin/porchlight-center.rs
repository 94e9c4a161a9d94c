//! The `porchlight-center` command: the reference city center (see `porchlight::center` and
//! docs/center.md). Parses the command line, sets up logging, runs a subcommand, and maps an
//! error to exit code 1 (other codes are outcomes: `porchlight::center::exit`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = porchlight::center::Cli::parse();
    porchlight::cli::init_tracing(cli.verbose);
    match porchlight::center::run(cli) {
        Ok(code) => code,
        Err(error) => {
            // Each variant's message already carries its cause.
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
