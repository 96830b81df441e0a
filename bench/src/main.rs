//! `fishchat-bench`: load scenarios against a FishChat deployment, and
//! micro-benchmarks of its parts. Every run prints a table and saves its
//! figures, with its configuration, as JSON.

mod codec;
mod report;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "fishchat-bench",
    version,
    about = "FishChat load generator and benchmarks"
)]
struct Cli {
    /// Where to write the JSON report.
    #[arg(long, global = true, default_value = "target/bench")]
    out_dir: PathBuf,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// The wire codec alone: decode rate, and encode-once-and-share against
    /// encode-per-connection for a fan-out.
    Codec(codec::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report = match cli.scenario {
        Scenario::Codec(args) => codec::run(&args)?,
    };
    report.print();
    let path = report.save(&cli.out_dir)?;
    println!("saved {}", path.display());
    Ok(())
}
