//! `tl-sim`: list and run simulator scenarios.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use transitloom_simulations::scenario;

/// Runs Transitloom's real state machines in a deterministic simulated
/// network (links with delay, jitter, loss, rate limits; RFC 4787 NATs).
#[derive(Debug, Parser)]
#[command(name = "tl-sim", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Lists the scenarios with their parameters and defaults.
    List,
    /// Runs one scenario and prints its summary table.
    Run {
        /// The scenario name (see `tl-sim list`).
        scenario: String,
        /// Seed of every random choice; the same seed gives the same run
        /// (compare the printed trace hash).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Overrides a scenario parameter, e.g. `--param loss=0.05`; repeatable.
        #[arg(long = "param", short = 'p', value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Also draws the run's time series (throughput per path or flow,
        /// session rates, … as the scenario records them) as an SVG chart
        /// into FILE.
        #[arg(long, value_name = "FILE")]
        plot: Option<PathBuf>,
    },
    /// Runs a scenario's named cases and prints their summaries as one
    /// markdown table: `multiwan` (its cases a–e, for docs/performance.md)
    /// or `nat-matrix` (every pair of NAT behaviours through `nat-pair`,
    /// for docs/nat-matrix.md).
    Table {
        /// `multiwan` or `nat-matrix`.
        scenario: String,
        /// Seed of every case (the first seed for `nat-matrix`).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Seeds per pair, counting up from `--seed` (`nat-matrix` only).
        #[arg(long, default_value_t = 5)]
        seeds: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::List => {
            for s in scenario::all() {
                println!("{}\n    {}", s.name, s.about);
                for p in s.params {
                    println!("    --param {}={:<8} {}", p.name, p.default, p.about);
                }
                println!();
            }
            ExitCode::SUCCESS
        }
        Command::Run {
            scenario: name,
            seed,
            params,
            plot,
        } => {
            let summary = match scenario::find(&name).and_then(|s| s.run(seed, &params)) {
                Ok(summary) => summary,
                Err(err) => {
                    eprintln!("tl-sim: {err}");
                    return ExitCode::from(2);
                }
            };
            println!("scenario {name}, seed {seed}");
            print!("{}", summary.table());
            if let Some(file) = plot {
                let mut title = format!("tl-sim run {name} --seed {seed}");
                for param in &params {
                    title.push_str(&format!(" --param {param}"));
                }
                let Some(svg) = transitloom_simulations::plot::svg(&title, &summary.series) else {
                    eprintln!("tl-sim: scenario {name} records no time series to plot");
                    return ExitCode::from(2);
                };
                if let Err(err) = std::fs::write(&file, svg) {
                    eprintln!("tl-sim: writing {}: {err}", file.display());
                    return ExitCode::from(1);
                }
                println!("plot written to {}", file.display());
            }
            if summary.violations.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Command::Table {
            scenario: name,
            seed,
            seeds,
        } => {
            let table = if name == scenario::multiwan::SCENARIO_NAME {
                scenario::multiwan::table(seed)
            } else if name == scenario::nat_traversal::MATRIX_NAME {
                let seeds: Vec<u64> = (seed..seed + u64::from(seeds)).collect();
                scenario::nat_traversal::matrix(&seeds)
            } else {
                eprintln!(
                    "tl-sim: {name:?} has no table (there are: {}, {})",
                    scenario::multiwan::SCENARIO_NAME,
                    scenario::nat_traversal::MATRIX_NAME
                );
                return ExitCode::from(2);
            };
            match table {
                Ok(table) => {
                    print!("{table}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("tl-sim: {err}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
