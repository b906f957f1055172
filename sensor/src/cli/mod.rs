//! Command line: `gatewatch run | replay | rules | audit`.

pub mod doctor;
pub mod pipeline;
pub mod replay;
pub mod run;
pub mod workers;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::sinks::OutputSpec;

pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("GATEWATCH_GIT_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(name = "gatewatch", version = VERSION, about = "eBPF security sensor for HTTP API, AI-gateway and MCP traffic")]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to interfaces and stream events and alerts until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Run a pcap/pcapng through the same kernel program, offline.
    Replay(ReplayArgs),
    /// What this host supports and what `run` would capture: loads every
    /// kernel program without attaching. Exit 0 all, 3 part, 1 none.
    Doctor {
        /// Config file (TOML) whose capture settings to load with.
        #[arg(long)]
        config: Option<PathBuf>,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The hash-chained audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The Rhai rule pack.
    #[command(subcommand)]
    Rules(RulesCommand),
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Compile every rule in DIR; exit 0 when the set loads, 1 with file:line errors.
    Check {
        /// Rules directory (default: the packaged pack).
        dir: Option<PathBuf>,
    },
    /// Run each rule's fixtures (NAME.tests.json beside NAME.rhai); exit 0 when all pass.
    Test {
        /// Rules directory (default: the packaged pack).
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the chain across FILEs (rotated files in any order). Exit 0 when
    /// intact, 1 at the first broken record (file, line, kind), 2 when it cannot check.
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The chain's head as seen elsewhere: SEQ:HASH, or an anchors.jsonl file
        /// (its last line). Makes a cut tail detectable.
        #[arg(long)]
        anchor: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Config file (TOML). Without it, the embedded default.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Interface to attach to (repeatable); replaces sensor.interfaces.
    #[arg(long = "iface")]
    pub ifaces: Vec<String>,
    /// stdout, jsonl:PATH or kafka:BROKER[,BROKER]/TOPIC (repeatable); replaces the config's outputs.
    #[arg(long = "output")]
    pub outputs: Vec<OutputSpec>,
    /// Rules directory; replaces rules.dir.
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Validate the config and the rules, then exit.
    #[arg(long)]
    pub check_config: bool,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The capture to replay (pcap or pcapng; Ethernet, Linux cooked, raw IP).
    #[arg(long)]
    pub pcap: PathBuf,
    /// Config file (TOML) for capture settings. Without it, the embedded default.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// stdout, jsonl:PATH (repeatable). Default: stdout.
    #[arg(long = "output")]
    pub outputs: Vec<OutputSpec>,
    /// Rules directory; replaces rules.dir.
    #[arg(long)]
    pub rules: Option<PathBuf>,
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GATEWATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
