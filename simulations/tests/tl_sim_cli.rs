//! The `tl-sim` command line: exit codes and `--plot`.

use std::process::Command;

fn tl_sim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tl-sim"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn plot_writes_an_svg_of_the_runs_series() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.svg");
    let out = tl_sim(&[
        "run",
        "control-plane",
        "--seed",
        "3",
        "--param",
        "duration_s=6",
        "--param",
        "revoke_at_s=0",
        "--plot",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let svg = std::fs::read_to_string(&file).unwrap();
    assert!(svg.starts_with("<svg "), "{svg}");
    assert!(svg.contains("alpha → beta (Mbit/s)"), "{svg}");
    assert!(svg.contains("--param duration_s=6"), "{svg}");
    assert_eq!(svg.matches("<polyline").count(), 1);
}

#[test]
fn a_scenario_without_series_cannot_be_plotted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("none.svg");
    let out = tl_sim(&["run", "probe-pair", "--plot", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no time series"));
    assert!(!file.exists());
}

#[test]
fn unknown_scenarios_and_bad_parameters_exit_2() {
    assert_eq!(tl_sim(&["run", "no-such-scenario"]).status.code(), Some(2));
    let out = tl_sim(&["run", "control-plane", "--param", "loss=2"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("loss"));
}
