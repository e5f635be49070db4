//! `bertsweep`: the coordinator server and its command-line client. Thin glue over the
//! library: parse, run, print the error chain on one line, exit non-zero.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = bertsweep_coordinator::cli::Cli::parse();
    bertsweep_telemetry::logs::init(cli.global.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bertsweep_coordinator::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
