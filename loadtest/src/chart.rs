//! An SVG chart of latency over time: per second of the run, the p95 of POST latency, start delay and end to end.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::stats::percentile;

/// One series: a name, a colour and (second, milliseconds) samples.
pub struct Series<'a> {
    pub name: &'a str,
    pub colour: &'a str,
    pub samples: Vec<(f64, f64)>,
}

/// The p95 per whole second.
fn p95_per_second(samples: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut buckets: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for (t, v) in samples {
        buckets.entry(t.floor() as i64).or_default().push(*v);
    }
    buckets
        .into_iter()
        .map(|(second, mut values)| {
            values.sort_by(f64::total_cmp);
            (second as f64, percentile(&values, 95.0))
        })
        .collect()
}

/// Renders the series as an 800 × 400 SVG with axes, a legend and a logarithmic millisecond scale.
pub fn svg(title: &str, series: &[Series<'_>]) -> String {
    let (width, height, left, bottom, top, right) = (800.0, 400.0, 60.0, 40.0, 40.0, 20.0);
    let lines: Vec<(&Series<'_>, Vec<(f64, f64)>)> = series.iter().map(|s| (s, p95_per_second(&s.samples))).collect();
    let max_t = lines.iter().flat_map(|(_, p)| p.iter().map(|x| x.0)).fold(1.0, f64::max);
    let max_v = lines.iter().flat_map(|(_, p)| p.iter().map(|x| x.1)).fold(1.0, f64::max);
    let log_max = (max_v.max(1.0) * 2.0).log10();
    let x = |t: f64| left + (t / max_t) * (width - left - right);
    let y = |v: f64| height - bottom - ((v.max(0.1).log10() + 1.0) / (log_max + 1.0)) * (height - bottom - top);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{left}" y="20" font-size="14">{title}</text>"#
    );
    for exponent in -1..=(log_max.floor() as i32) {
        let v = 10f64.powi(exponent);
        let _ = write!(
            out,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="5" y="{y:.1}">{v} ms</text>"##,
            width - right,
            y = y(v)
        );
    }
    let _ = write!(
        out,
        r#"<text x="{}" y="{}">seconds since start (p95 per second)</text>"#,
        width / 2.0 - 80.0,
        height - 10.0
    );
    for (index, (series, points)) in lines.iter().enumerate() {
        let path: Vec<String> = points.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            series.colour,
            path.join(" ")
        );
        let ly = top + 15.0 * index as f64;
        let _ = write!(
            out,
            r#"<rect x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            width - 220.0,
            ly - 9.0,
            series.colour,
            width - 205.0,
            ly,
            series.name
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_one_line_per_series() {
        let series = [
            Series { name: "POST", colour: "blue", samples: vec![(0.1, 2.0), (0.5, 4.0), (1.2, 3.0)] },
            Series { name: "e2e", colour: "red", samples: vec![(0.2, 20.0)] },
        ];
        let svg = svg("test", &series);
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(">POST<") && svg.contains(">e2e<"));
    }
}
