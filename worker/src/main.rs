//! `bertsweep-worker`: thin glue over the library. Errors print as one line with their
//! whole chain and exit 1; nothing here panics on bad input. Exit 0: the work is done (the
//! study ended, `--max-trials` reached); 75: stopped by SIGTERM/SIGINT with the trial handed
//! back, so run it again; 2: a command-line error; 130: a second Ctrl-C.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Fine-tunes BERT text classifiers for bertsweep.
#[derive(Debug, Parser)]
#[command(name = "bertsweep-worker", version, about)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    /// What to do; without a subcommand the worker serves a coordinator's trials.
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: cmd::serve::ServeArgs,
    /// Log lines on stderr as `text` or `json` (one object per line, for log pipelines).
    #[arg(long, global = true, env = "BERTSWEEP_LOG_FORMAT", default_value = "text")]
    log_format: bertsweep_telemetry::logs::LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one fine-tuning locally, without a coordinator, printing one line per epoch.
    Train(cmd::train::TrainArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    bertsweep_telemetry::logs::init(cli.log_format);
    let result = match cli.command {
        Some(Command::Train(args)) => cmd::train::run(args).map(|()| cmd::serve::Ended::Finished),
        None => cmd::serve::run(cli.serve),
    };
    match result {
        Ok(cmd::serve::Ended::Finished) => ExitCode::SUCCESS,
        Ok(cmd::serve::Ended::Released) => ExitCode::from(cmd::serve::EXIT_RELEASED),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
