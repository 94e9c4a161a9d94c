//! The `porchlight` command: parses the command line, sets up logging and runs a subcommand.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = porchlight::cli::Cli::parse();
    porchlight::cli::init_tracing(cli.verbose);
    match porchlight::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
