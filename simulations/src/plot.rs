//! Line charts of a run's series as standalone SVG, for `tl-sim run
//! --plot FILE`: one line per series over simulated time, with axes, ticks
//! and a legend. No dependencies and no fonts beyond the viewer's default.

use std::collections::BTreeMap;
use std::fmt::Write as _;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
/// Line colours, cycled (distinguishable for the common colour blindnesses).
const COLOURS: [&str; 8] = [
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000",
];

/// Draws `samples` (`(series, seconds, value)`) as an SVG document titled
/// `title`. Returns `None` when there is nothing to draw.
pub fn svg(title: &str, samples: &[(String, f64, f64)]) -> Option<String> {
    let mut series: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for (name, t, v) in samples {
        if t.is_finite() && v.is_finite() {
            series.entry(name).or_default().push((*t, *v));
        }
    }
    if series.is_empty() {
        return None;
    }
    for points in series.values_mut() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let all = || series.values().flatten();
    let t_max = all().map(|p| p.0).fold(0.0_f64, f64::max).max(1e-9);
    let v_max = nice_ceiling(all().map(|p| p.1).fold(0.0_f64, f64::max));
    let t_max = nice_ceiling(t_max);
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let x = |t: f64| LEFT + t / t_max * plot_w;
    let y = |v: f64| TOP + plot_h - v.max(0.0) / v_max * plot_h;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Grid, ticks and labels: five steps on each axis.
    for i in 0..=5 {
        let f = f64::from(i) / 5.0;
        let (gy, gx) = (y(v_max * f), x(t_max * f));
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            gy + 4.0,
            tick(v_max * f)
        );
        let _ = writeln!(
            out,
            r##"<line x1="{gx:.1}" y1="{TOP}" x2="{gx:.1}" y2="{:.1}" stroke="#eee"/><text x="{gx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 16.0,
            tick(t_max * f)
        );
    }
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">simulated time (s)</text>"#,
        LEFT + plot_w / 2.0,
        TOP + plot_h + 34.0
    );
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut path = String::new();
        for (t, v) in points {
            let _ = write!(path, "{:.1},{:.1} ", x(*t), y(*v));
        }
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{}"/>"#,
            path.trim_end()
        );
        // Legend entries run along the bottom.
        let lx = LEFT + (i as f64) * 170.0;
        let ly = HEIGHT - 10.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{ly:.1}">{}</text>"#,
            ly - 4.0,
            lx + 18.0,
            ly - 4.0,
            lx + 22.0,
            escape(name)
        );
    }
    out.push_str("</svg>\n");
    Some(out)
}

/// The smallest round number (1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a power
/// of ten) at or above `v`, so an axis ends close to its data.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|c| *c >= v * (1.0 - 1e-12))
        .unwrap_or(10.0 * magnitude)
}

fn tick(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e9 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<(String, f64, f64)> {
        let mut s = Vec::new();
        for i in 0..=10 {
            let t = f64::from(i);
            s.push(("a <b>".to_owned(), t, t * 2.0));
            s.push(("c".to_owned(), t, 20.0 - t));
        }
        s
    }

    #[test]
    fn one_polyline_per_series_inside_the_frame() {
        let svg = svg("title & more", &samples()).unwrap();
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("title &amp; more"));
        assert!(svg.contains("a &lt;b&gt;"));
        // Every point lies inside the plotting frame.
        for line in svg.lines().filter(|l| l.starts_with("<polyline")) {
            let points = line.split("points=\"").nth(1).unwrap();
            for pair in points.trim_end_matches("\"/>").split(' ') {
                let (px, py) = pair.split_once(',').unwrap();
                let (px, py): (f64, f64) = (px.parse().unwrap(), py.parse().unwrap());
                assert!((LEFT..=WIDTH - RIGHT).contains(&px), "{px}");
                assert!((TOP..=HEIGHT - BOTTOM).contains(&py), "{py}");
            }
        }
        // The highest value (20, a nice number) touches the top of the axis.
        assert!(svg.contains(&format!(",{TOP:.1}")), "{svg}");
        assert!(svg.ends_with("</svg>\n"));
    }

    #[test]
    fn nothing_to_draw_is_none() {
        assert!(svg("t", &[]).is_none());
        assert!(svg("t", &[("x".to_owned(), f64::NAN, 1.0)]).is_none());
    }

    #[test]
    fn nice_ceilings() {
        for (v, want) in [
            (0.0, 1.0),
            (0.7, 0.8),
            (1.0, 1.0),
            (1.2, 1.5),
            (3.0, 3.0),
            (12.5, 15.0),
            (51.0, 60.0),
            (90.0, 100.0),
        ] {
            assert_eq!(nice_ceiling(v), want, "{v}");
        }
    }
}
