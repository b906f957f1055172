use std::process::ExitCode;

use clap::Parser;
use gatewatch::cli::{self, Cli, Command};

fn main() -> ExitCode {
    let args = Cli::parse();
    cli::init_logging(args.log_format);
    let result = match args.command {
        Command::Run(a) => cli::run::run_cmd(a),
        Command::Replay(a) => cli::replay::replay_cmd(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatewatch: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
