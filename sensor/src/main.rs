use std::process::ExitCode;

use clap::Parser;
use gatewatch::cli::{self, AuditCommand, Cli, Command, RulesCommand};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // No transparent huge pages: mimalloc commits its arena eagerly, and with
    // THP every first touch would fault in 2 MB, tripling the idle RSS.
    // SAFETY: prctl with integer arguments only; failure just leaves THP on.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    let args = Cli::parse();
    cli::init_logging(args.log_format);
    let result = match args.command {
        Command::Run(a) => cli::run::run_cmd(a),
        Command::Replay(a) => cli::replay::replay_cmd(a),
        Command::Rules(cmd) => {
            let cfg = gatewatch::rules::RulesConfig::default();
            let r = match cmd {
                RulesCommand::Check { dir } => {
                    gatewatch::rules::cli::check(&dir.unwrap_or_else(|| cfg.dir.clone()), &cfg)
                }
                RulesCommand::Test { dir } => {
                    gatewatch::rules::cli::test(&dir.unwrap_or_else(|| cfg.dir.clone()), &cfg)
                }
            };
            return match r {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("gatewatch: error: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Doctor { config, json } => {
            return match cli::doctor::doctor_cmd(config.as_deref(), json) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("gatewatch: error: {e:#}");
                    ExitCode::from(cli::doctor::EXIT_NONE)
                }
            };
        }
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
