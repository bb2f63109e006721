//! Named scenarios for `tl-sim`: each builds a world from typed, validated
//! parameters, runs it, and returns a summary table.

mod cluster;
mod control_plane;
mod mesh_udp;
pub mod multiwan;
mod nat_probe;
pub mod nat_traversal;
mod params;
mod partition_expiry;
mod probe_pair;
mod reconnect_storm;
mod relay_abuse;
mod saturate;
mod tcp_mesh;

use std::fmt::Write as _;

pub use control_plane::InMemoryCoordinator;
pub use params::{ParamSpec, Params};

use crate::SimError;

/// A scenario `tl-sim` can run.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// The name given to `tl-sim run`.
    pub name: &'static str,
    /// One line on what it shows.
    pub about: &'static str,
    /// Its parameters with defaults.
    pub params: &'static [ParamSpec],
    run: fn(u64, &Params) -> Result<Summary, SimError>,
}

impl Scenario {
    /// Runs the scenario with `seed` and parameter overrides `key=value`.
    ///
    /// # Errors
    /// An unknown parameter, an unparsable or impossible value, or a
    /// topology the simulator refuses.
    pub fn run(&self, seed: u64, overrides: &[String]) -> Result<Summary, SimError> {
        let params = Params::parse(self.params, overrides)?;
        (self.run)(seed, &params)
    }
}

/// Every scenario, in listing order.
pub fn all() -> &'static [Scenario] {
    &[
        probe_pair::SCENARIO,
        nat_probe::SCENARIO,
        nat_probe::REBIND,
        saturate::SCENARIO,
        mesh_udp::SCENARIO,
        control_plane::SCENARIO,
        reconnect_storm::SCENARIO,
        partition_expiry::SCENARIO,
        cluster::SCENARIO,
        tcp_mesh::SCENARIO,
        relay_abuse::SCENARIO,
        multiwan::SCENARIO,
        nat_traversal::SCENARIO,
    ]
}

/// The scenario called `name`.
///
/// # Errors
/// [`SimError::UnknownScenario`].
pub fn find(name: &str) -> Result<&'static Scenario, SimError> {
    all()
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| SimError::UnknownScenario(name.to_owned()))
}

/// What a run produced.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// (metric, value) rows, in display order.
    pub rows: Vec<(String, String)>,
    /// The event-trace hash.
    pub trace_hash: u64,
    /// Events processed.
    pub events: u64,
    /// Invariant violations (empty on a healthy run).
    pub violations: Vec<String>,
    /// Per-series samples `(series, seconds, value)` for plots.
    pub series: Vec<(String, f64, f64)>,
}

impl Summary {
    /// Takes the run's trace hash, event count and the world's own
    /// invariant violations (after the scenario's).
    pub fn finish(&mut self, world: &crate::world::World) {
        self.trace_hash = world.trace().value();
        self.events = world.events_run();
        self.violations.extend(world.violations().iter().cloned());
    }

    /// Adds a row.
    pub fn row(&mut self, metric: &str, value: impl std::fmt::Display) {
        self.rows.push((metric.to_owned(), value.to_string()));
    }

    /// Adds series `name`: the payload throughput of `arrivals` in Mbit/s,
    /// in buckets of `bucket` from 0 to `until`.
    pub fn throughput(
        &mut self,
        name: &str,
        arrivals: &[crate::apps::Arrival],
        bucket: std::time::Duration,
        until: std::time::Duration,
    ) {
        let width = bucket.as_secs_f64();
        let mut bytes = vec![0u64; (until.as_secs_f64() / width).ceil() as usize + 1];
        for arrival in arrivals {
            if let Some(slot) = bytes.get_mut((arrival.at.as_secs_f64() / width) as usize) {
                *slot += arrival.len as u64;
            }
        }
        for (i, b) in bytes.iter().enumerate() {
            self.series.push((
                name.to_owned(),
                i as f64 * width,
                *b as f64 * 8.0 / width / 1e6,
            ));
        }
    }

    /// The value of a row, for tests.
    pub fn get(&self, metric: &str) -> Option<&str> {
        self.rows
            .iter()
            .find(|(m, _)| m == metric)
            .map(|(_, v)| v.as_str())
    }

    /// The summary as an aligned two-column table.
    pub fn table(&self) -> String {
        let width = self
            .rows
            .iter()
            .map(|(m, _)| m.len())
            .max()
            .unwrap_or(0)
            .max(16);
        let mut out = String::new();
        let _ = writeln!(out, "{:<width$}  value", "metric");
        let _ = writeln!(out, "{:-<width$}  {:-<12}", "", "");
        for (metric, value) in &self.rows {
            let _ = writeln!(out, "{metric:<width$}  {value}");
        }
        let _ = writeln!(out, "{:<width$}  {}", "events", self.events);
        let _ = writeln!(out, "{:<width$}  {:016x}", "trace hash", self.trace_hash);
        let verdict = if self.violations.is_empty() {
            "none".to_owned()
        } else {
            self.violations.len().to_string()
        };
        let _ = writeln!(out, "{:<width$}  {verdict}", "invariant violations");
        for violation in &self.violations {
            let _ = writeln!(out, "  {violation}");
        }
        out
    }
}

/// Milliseconds with one decimal, for tables.
pub(crate) fn ms(d: std::time::Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}
