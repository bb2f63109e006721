//! The named cases of issue 6, item 5, and their summary as a markdown
//! table (`tl-sim table multiwan`) for docs/performance.md.

use std::fmt::Write as _;

use super::super::Summary;
use crate::SimError;

/// A named run of the `multiwan` scenario.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Its name: the letter, and what varies.
    pub name: &'static str,
    /// What it shows.
    pub about: &'static str,
    /// Its parameters, as `tl-sim run multiwan --param` takes them.
    pub params: &'static [&'static str],
}

impl Case {
    /// Runs the case with `seed`.
    ///
    /// # Errors
    /// As [`crate::scenario::Scenario::run`] (not for the cases as written).
    pub fn run(&self, seed: u64) -> Result<Summary, SimError> {
        let params: Vec<String> = self.params.iter().map(|&p| p.to_owned()).collect();
        super::SCENARIO.run(seed, &params)
    }

    /// The command line that runs it.
    pub fn command(&self, seed: u64) -> String {
        let mut line = format!("tl-sim run multiwan --seed {seed}");
        for param in self.params {
            line.push_str(" --param ");
            line.push_str(param);
        }
        line
    }
}

/// The cases a–e, with single-link baselines for b and d, each
/// short enough for a debug-build test (the
/// flow starts at 1 s; goodput counts from 2 s; cuts at 3 s, and
/// six seconds after a cut for TCP to regrow its window).
pub const CASES: &[Case] = &[
    Case {
        name: "a",
        about: "two matched links, 50 Mbit/s and 20 ms each",
        params: &[
            "rate1_mbps=50",
            "delay1_ms=20",
            "rate2_mbps=50",
            "delay2_ms=20",
            "duration_s=5",
        ],
    },
    Case {
        name: "b",
        about: "100 Mbit/s at 20 ms plus 50 Mbit/s at 50 ms",
        params: &[
            "rate1_mbps=100",
            "delay1_ms=20",
            "rate2_mbps=50",
            "delay2_ms=50",
            "duration_s=5",
        ],
    },
    Case {
        name: "b-one-link",
        about: "b's baseline: the same TCP over link 1 alone (link 2 dead before the flow starts)",
        params: &[
            "rate1_mbps=100",
            "delay1_ms=20",
            "rate2_mbps=50",
            "delay2_ms=50",
            "cut2_at_s=0.5",
            "duration_s=5",
        ],
    },
    Case {
        name: "b-fit",
        about: "as b, with a window link 1 holds (0.32 BDP of the sum, 1.2 of link 1's)",
        params: &[
            "rate1_mbps=100",
            "delay1_ms=20",
            "rate2_mbps=50",
            "delay2_ms=50",
            "window_bdp=0.32",
            "duration_s=5",
        ],
    },
    Case {
        name: "c",
        about: "as a, and link 2 dies at 3 s",
        params: &[
            "rate1_mbps=50",
            "delay1_ms=20",
            "rate2_mbps=50",
            "delay2_ms=20",
            "cut2_at_s=3",
            "duration_s=9",
        ],
    },
    Case {
        name: "d",
        about: "as a, with 5 % loss each way on link 2",
        params: &[
            "rate1_mbps=50",
            "delay1_ms=20",
            "rate2_mbps=50",
            "delay2_ms=20",
            "loss2=0.05",
            "duration_s=5",
        ],
    },
    Case {
        name: "d-one-link",
        about: "d's baseline: the same TCP over link 1 alone (link 2 dead before the flow starts)",
        params: &[
            "rate1_mbps=50",
            "delay1_ms=20",
            "rate2_mbps=50",
            "delay2_ms=20",
            "loss2=0.05",
            "cut2_at_s=0.5",
            "duration_s=5",
        ],
    },
    Case {
        name: "e-backup",
        about: "as a, link 2 a backup, a flow one link can carry (window 0.45 BDP, about 45 Mbit/s); link 1 dies at 3 s",
        params: &[
            "rate1_mbps=50",
            "delay1_ms=20",
            "rate2_mbps=50",
            "delay2_ms=20",
            "backup2=1",
            "window_bdp=0.45",
            "cut1_at_s=3",
            "duration_s=9",
        ],
    },
    Case {
        name: "e-metered",
        about: "as a, link 2 metered, a flow link 1 can carry alone (window 0.25 BDP, about 25 Mbit/s); link 1 dies at 3 s",
        params: &[
            "rate1_mbps=50",
            "delay1_ms=20",
            "rate2_mbps=50",
            "delay2_ms=20",
            "metered2=1",
            "window_bdp=0.25",
            "cut1_at_s=3",
            "duration_s=9",
        ],
    },
];

/// A summary row's value, or "–".
fn cell<'a>(summary: &'a Summary, row: &str) -> &'a str {
    summary.get(row).unwrap_or("–")
}

/// The part of a value before its first space ("48.54 Mbit/s" → "48.54").
fn leading(value: &str) -> &str {
    value.split_whitespace().next().unwrap_or(value)
}

/// The first row present among `rows`, for values that depend on which
/// link was cut.
fn either<'a>(summary: &'a Summary, rows: &[&str]) -> &'a str {
    rows.iter().find_map(|r| summary.get(r)).unwrap_or("–")
}

/// The cases' summaries as one markdown table, a row per case.
pub fn markdown(seed: u64, runs: &[(Case, Summary)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| case | goodput Mbit/s | of sum | of best link | uplink 1 / 2 data share | uplink 2 data while uplink 1 active | reordered (most packets late) | retransmitted | dead uplink's data stopped after | stall | recovered after | invariant violations |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (case, s) in runs {
        let cut = |rows: [&str; 2]| leading_ms(either(s, &rows));
        let _ = writeln!(
            out,
            "| {} {} | {} | {} | {} | {} / {} | {} | {} ({}) | {} | {} | {} | {} | {} |",
            case.name,
            case.about,
            leading(cell(s, "goodput")),
            cell(s, "goodput / sum of links"),
            cell(s, "goodput / best link"),
            cell(s, "uplink 1 data share"),
            cell(s, "uplink 2 data share"),
            megabytes(cell(s, "uplink 2 data while uplink 1 active")),
            percentage(cell(s, "reordered packets")),
            leading(cell(s, "reorder extent")),
            percentage(cell(s, "retransmitted segments")),
            cut([
                "uplink 1 data stopped after cut",
                "uplink 2 data stopped after cut"
            ]),
            cut(["stall after link 1 cut", "stall after link 2 cut"]),
            cut(["recovered after link 1 cut", "recovered after link 2 cut"]),
            s.violations.len(),
        );
    }
    let _ = writeln!(out, "\nEach case, with its summary and `--plot FILE`:\n");
    for (case, _) in runs {
        let _ = writeln!(out, "- {}: `{}`", case.name, case.command(seed));
    }
    out
}

/// "412.3 ms (…)" → "412.3 ms"; other values unchanged.
fn leading_ms(value: &str) -> String {
    match value.split_once(" ms") {
        Some((number, _)) => format!("{number} ms"),
        None => value.to_owned(),
    }
}

/// "466 of 10393 (4.48 %)" → "4.48 %".
fn percentage(value: &str) -> &str {
    value
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or(value)
}

/// A byte count as megabytes ("1909620" → "1.91 MB").
fn megabytes(value: &str) -> String {
    value
        .parse::<u64>()
        .map_or(value.to_owned(), |b| format!("{:.2} MB", b as f64 / 1e6))
}

/// Runs every case with `seed` and returns the markdown table.
///
/// # Errors
/// As [`Case::run`].
pub fn table(seed: u64) -> Result<String, SimError> {
    let runs = CASES
        .iter()
        .map(|case| case.run(seed).map(|s| (*case, s)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(markdown(seed, &runs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_parses_and_names_itself() {
        for case in CASES {
            crate::scenario::Params::parse(super::super::PARAMS, &case_params(case))
                .unwrap_or_else(|e| panic!("case {}: {e}", case.name));
            assert!(case
                .command(3)
                .starts_with("tl-sim run multiwan --seed 3 --param "));
        }
    }

    fn case_params(case: &Case) -> Vec<String> {
        case.params.iter().map(|&p| p.to_owned()).collect()
    }

    #[test]
    fn the_table_has_a_row_per_case_and_takes_what_each_summary_has() {
        let mut cut = Summary::default();
        cut.row("goodput", "48.54 Mbit/s");
        cut.row("uplink 2 data while uplink 1 active", "1909620");
        cut.row("retransmitted segments", "466 of 10393 (4.48 %)");
        cut.row("uplink 2 data stopped after cut", "612.0 ms");
        cut.row("stall after link 2 cut", "0.0 ms (none after the cut)");
        cut.violations.push("x".to_owned());
        let runs = [(CASES[0], Summary::default()), (CASES[2], cut)];
        let table = markdown(1, &runs);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("| case | goodput"));
        assert_eq!(lines[1].matches('|').count(), lines[0].matches('|').count());
        assert!(
            lines[2].starts_with("| a two matched links"),
            "{}",
            lines[2]
        );
        assert!(lines[2].contains("| – |"));
        assert!(lines[3].contains("| 48.54 |"), "{}", lines[3]);
        assert!(lines[3].contains("| 1.91 MB |"), "{}", lines[3]);
        assert!(lines[3].contains("| 4.48 % |"), "{}", lines[3]);
        assert!(
            lines[3].contains("| 612.0 ms | 0.0 ms | – | 1 |"),
            "{}",
            lines[3]
        );
        assert_eq!(lines[2].matches('|').count(), lines[0].matches('|').count());
    }
}
