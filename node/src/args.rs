//! Command-line options every service accepts.

use std::path::PathBuf;

use clap::Args;

use crate::logging::LogFormat;

/// Options shared by every service binary; flattened into each one's `clap` parser.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// TOML configuration file. Environment variables `FISHCHAT_<SERVICE>_<KEY>`
    /// override it, and command-line options override both.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "FISHCHAT_LOG_FORMAT")]
    pub log_format: LogFormat,
}
