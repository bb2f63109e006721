//! Log output of both daemons: human text, or one JSON object per line for
//! a log collector. `RUST_LOG` filters either (default `info`).

use std::io::{self, IsTerminal as _};

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured when standard error is a terminal.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields`
    /// (the message and every structured field) and the active spans.
    Json,
}

/// Installs the process's log subscriber; a second call does nothing.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// Reports the error a daemon exits with: a plain `PROGRAM: ERROR` line in
/// text mode, an `error` event in JSON mode so a collector sees it too.
pub fn fatal(format: LogFormat, program: &str, error: &dyn std::fmt::Display) {
    match format {
        LogFormat::Text => eprintln!("{program}: {error}"),
        LogFormat::Json => tracing::error!(%error, "{program} exiting"),
    }
}
