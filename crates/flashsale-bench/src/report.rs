//! What a bench prints and writes: the summary table, the JSON file, and the latency plot.

use std::fmt::Write;
use std::path::Path;

use serde::Serialize;

use super::driver::PhaseResult;
use super::stats::{Curve, OutcomeSummary};
use super::timeline::{WindowSummary, LATE, SENT_LATE, WINDOW};
use super::verify::{Check, SaleUnderTest};

#[derive(Serialize)]
pub struct PhaseReport {
    pub name: String,
    pub requests: u64,
    pub seconds: f64,
    pub requests_per_sec: f64,
    pub client_cpu_seconds: f64,
    pub client_cpu_micros_per_request: f64,
    pub server_cpu_micros_per_request: Option<f64>,
    pub errors: u64,
    pub outcomes: Vec<OutcomeSummary>,
    /// How many 100-ms windows of the phase had a request slower than 5 ms.
    pub windows_with_late_requests: usize,
    /// The windows with the most such requests, in time order.
    pub worst_windows: Vec<WindowSummary>,
    /// Requests the client sent more than 2 ms after they were due and their connection was
    /// free (open loop): their latency is counted from their due time, so this part of it is
    /// the client's lateness, not the server's.
    pub requests_sent_late: u64,
}

/// Windows listed under a phase's table.
const WORST_WINDOWS_SHOWN: usize = 5;

impl From<&PhaseResult> for PhaseReport {
    fn from(phase: &PhaseResult) -> Self {
        Self {
            name: phase.name.clone(),
            requests: phase.stats.total(),
            seconds: phase.elapsed.as_secs_f64(),
            requests_per_sec: phase.requests_per_sec(),
            client_cpu_seconds: phase.client_cpu.as_secs_f64(),
            client_cpu_micros_per_request: phase.client_cpu_micros_per_request(),
            server_cpu_micros_per_request: phase.server_cpu_micros_per_request(),
            errors: phase.errors(),
            outcomes: phase.stats.summaries(),
            windows_with_late_requests: phase.timeline.windows_with_late(),
            worst_windows: phase.timeline.worst(WORST_WINDOWS_SHOWN),
            requests_sent_late: phase.timeline.sent_late(),
        }
    }
}

#[derive(Serialize)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub target: String,
    pub connections: usize,
    pub phases: Vec<PhaseReport>,
    /// Purchase requests/s divided by baseline requests/s, when a baseline ran.
    pub ratio_to_baseline: Option<f64>,
    pub server_peak_rss_bytes: Option<u64>,
    pub server_cpu_seconds: Option<f64>,
    pub sales: Vec<SaleUnderTest>,
    pub checks: Vec<Check>,
    pub passed: bool,
    /// Figures derived from the phases (ratios), one sentence each.
    pub notes: Vec<String>,
    /// (percentile, ms) points per outcome, per phase, for the plot.
    #[serde(skip)]
    pub phase_curves: Vec<Vec<Curve>>,
}

pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nflashsale bench {}  seed {}  target {}  connections {}",
        report.scenario, report.seed, report.target, report.connections
    );
    let _ = writeln!(
        out,
        "\n{:<12} {:>10} {:>9} {:>11} {:>8} {:>17} {:>17}",
        "phase", "requests", "seconds", "req/s", "errors", "client CPU us/req", "server CPU us/req"
    );
    for phase in &report.phases {
        let server = phase
            .server_cpu_micros_per_request
            .map_or_else(|| "-".to_owned(), |micros| format!("{micros:.1}"));
        let _ = writeln!(
            out,
            "{:<12} {:>10} {:>9.2} {:>11.0} {:>8} {:>17.1} {:>17}",
            phase.name,
            phase.requests,
            phase.seconds,
            phase.requests_per_sec,
            phase.errors,
            phase.client_cpu_micros_per_request,
            server
        );
    }
    for phase in &report.phases {
        let _ = writeln!(
            out,
            "\n{:<28} {:>9} {:>8} {:>8} {:>8} {:>9} {:>9}   ({})",
            "outcome", "count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", phase.name
        );
        for row in &phase.outcomes {
            let _ = writeln!(
                out,
                "{:<28} {:>9} {:>8.3} {:>8.3} {:>8.3} {:>9.3} {:>9.3}",
                row.outcome, row.count, row.p50_ms, row.p90_ms, row.p99_ms, row.p999_ms, row.max_ms
            );
        }
        render_late_windows(&mut out, phase);
    }
    if let Some(ratio) = report.ratio_to_baseline {
        let _ = writeln!(out, "\npurchase req/s / baseline req/s = {ratio:.3}");
    }
    for note in &report.notes {
        let _ = writeln!(out, "\n{note}");
    }
    if let (Some(rss), Some(cpu)) = (report.server_peak_rss_bytes, report.server_cpu_seconds) {
        let _ = writeln!(
            out,
            "server: peak RSS {:.1} MB, CPU {cpu:.2} s",
            rss as f64 / 1_048_576.0
        );
    }
    let _ = writeln!(out, "\nchecks:");
    for check in &report.checks {
        let mark = if check.passed { "ok  " } else { "FAIL" };
        let _ = writeln!(out, "  {mark} {}  ({})", check.name, check.detail);
    }
    let verdict = if report.passed { "PASSED" } else { "FAILED" };
    let _ = writeln!(out, "\n{verdict}");
    out
}

/// Where the late requests were: spread over the run, or gathered in a few moments.
fn render_late_windows(out: &mut String, phase: &PhaseReport) {
    if phase.worst_windows.is_empty() {
        return;
    }
    let windows = (phase.seconds / WINDOW.as_secs_f64()).ceil().max(1.0);
    let _ = writeln!(
        out,
        "requests over {} ms in {} of {windows:.0} windows of {} ms; the worst:",
        LATE.as_millis(),
        phase.windows_with_late_requests,
        WINDOW.as_millis()
    );
    for window in &phase.worst_windows {
        let _ = write!(
            out,
            "  at {:>7.1} s: {:>6} of {:>6} late, slowest {:.1} ms",
            window.at_ms as f64 / 1000.0,
            window.late,
            window.requests,
            window.slowest_ms
        );
        if window.sent_late > 0 {
            let _ = write!(
                out,
                "; {} sent by the client over {} ms late",
                window.sent_late,
                SENT_LATE.as_millis()
            );
        }
        let _ = writeln!(out);
    }
    if phase.requests_sent_late > 0 {
        let _ = writeln!(
            out,
            "the client sent {} requests over {} ms after they were due and their connection \
             was free (counted in the latencies above: the client's lateness, not the server's)",
            phase.requests_sent_late,
            SENT_LATE.as_millis()
        );
    }
}

pub fn write_json(report: &Report, path: &Path) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}

/// Latency by percentile, one line per outcome, on log scales: the tail is what matters.
pub fn write_plot(report: &Report, path: &Path) -> std::io::Result<()> {
    if path.extension().and_then(|ext| ext.to_str()) != Some("svg") {
        return Err(std::io::Error::other(
            "--plot writes SVG: name the file *.svg",
        ));
    }
    const WIDTH: f64 = 900.0;
    const HEIGHT: f64 = 520.0;
    const LEFT: f64 = 70.0;
    const BOTTOM: f64 = 60.0;
    const COLORS: [&str; 8] = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    ];
    // x: "nines" of the percentile (90 → 1, 99 → 2, …), 100 % drawn at 6.
    let x_of = |percentile: f64| -> f64 {
        let nines = if percentile >= 100.0 {
            6.0
        } else {
            (-(1.0 - percentile / 100.0).log10()).min(6.0)
        };
        LEFT + nines / 6.0 * (WIDTH - LEFT - 20.0)
    };
    let curves: Vec<Curve> = report
        .phases
        .iter()
        .zip(&report.phase_curves)
        .flat_map(|(phase, curves)| {
            curves.iter().map(move |(outcome, points)| {
                (format!("{}: {outcome}", phase.name), points.clone())
            })
        })
        .collect();
    let max_ms = curves
        .iter()
        .flat_map(|(_, points)| points.iter().map(|(_, ms)| *ms))
        .fold(1.0_f64, f64::max);
    let (low, high) = (-2.0_f64, max_ms.log10().ceil().max(0.0));
    let y_of = |ms: f64| -> f64 {
        let value = ms.max(0.01).log10();
        HEIGHT - BOTTOM - (value - low) / (high - low).max(1e-9) * (HEIGHT - BOTTOM - 20.0)
    };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="14">flashsale bench {} (seed {}): latency by percentile</text>"#,
        report.scenario, report.seed
    );
    for (label, percentile) in [
        ("0", 0.0),
        ("90", 90.0),
        ("99", 99.0),
        ("99.9", 99.9),
        ("99.99", 99.99),
        ("99.999", 99.999),
        ("max", 100.0),
    ] {
        let x = x_of(percentile);
        let _ = writeln!(
            svg,
            r##"<line x1="{x}" y1="20" x2="{x}" y2="{}" stroke="#ddd"/><text x="{x}" y="{}" text-anchor="middle">{label}</text>"##,
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM + 16.0
        );
    }
    let mut decade = low as i32;
    while f64::from(decade) <= high {
        let ms = 10f64.powi(decade);
        let y = y_of(ms);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{ms} ms</text>"##,
            WIDTH - 20.0,
            LEFT - 6.0,
            y + 4.0
        );
        decade += 1;
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
        (WIDTH + LEFT) / 2.0,
        HEIGHT - 20.0
    );
    for (index, (label, points)) in curves.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|(p, ms)| format!("{:.1},{:.1}", x_of(*p), y_of(*ms)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let y = 36.0 + index as f64 * 16.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{}" y="{}" width="10" height="10" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
            LEFT + 10.0,
            y - 9.0,
            LEFT + 26.0,
            y,
            escape(label)
        );
    }
    svg.push_str("</svg>\n");
    std::fs::write(path, svg)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
