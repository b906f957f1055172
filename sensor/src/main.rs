use std::process::ExitCode;

use clap::Parser;
use gatewatch::cli::{self, AuditCommand, Cli, Command};

fn main() -> ExitCode {
    let args = Cli::parse();
    cli::init_logging(args.log_format);
    let result = match args.command {
        Command::Run(a) => cli::run::run_cmd(a),
        Command::Replay(a) => cli::replay::replay_cmd(a),
        Command::Audit(AuditCommand::Verify { files, anchor }) => {
            return match gatewatch::audit::cli::verify(&files, anchor.as_deref()) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("gatewatch: error: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatewatch: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
