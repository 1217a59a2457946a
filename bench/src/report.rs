//! Tables (stdout and bench/RESULTS.md) and SVG plots.

use crate::{Plan, Result1};
use std::fmt::Write as _;
use std::path::Path;

pub struct Report {
    pub results: Vec<Result1>,
    pub skipped: Vec<String>,
    pub plan: Plan,
    pub mock_rss: f64,
    pub smoke: bool,
}

fn f(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), f)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    // Not available_parallelism(): this process is pinned to one core.
    let cores = std::fs::read_to_string("/proc/cpuinfo").map_or(0, |s| {
        s.lines().filter(|l| l.starts_with("processor")).count()
    });
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(0.0, |k| k / 1048576.0);
    format!("{cpu}, {cores} cores, {mem:.0} GiB")
}

fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

impl Report {
    fn direct(&self) -> Option<&Result1> {
        self.results.iter().find(|r| r.name.starts_with("direct"))
    }
    fn sluice(&self) -> Option<&Result1> {
        self.results.iter().find(|r| r.name == "Sluice")
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let d = self.direct();
        let _ = writeln!(
            s,
            "# Sluice benchmark results{}\n",
            if self.smoke {
                " (smoke run: tiny samples, figures meaningless)"
            } else {
                ""
            }
        );
        let _ = writeln!(s, "- machine: {}; {}", machine(), date());
        let _ = writeln!(
            s,
            "- setup: gateway pinned to core 0; load generator (in-repo, HdrHistogram, latency-corrected open loop) and the zero-latency upstream (`sluice-mock`, 1 thread) share core 1; every gateway talks to the same upstream\n- versions: {}\n",
            self.results.iter().filter(|r| !r.version.is_empty()).map(|r| format!("{} {}", r.name, r.version)).collect::<Vec<_>>().join(", ")
        );

        let _ = writeln!(
            s,
            "## One request at a time ({} sequential JSON chat completions)\n",
            self.plan.sequential
        );
        let _ = writeln!(s, "| system | p50 ms | p99 ms | p99.9 ms | added p50 ms | added p99 ms | added p99.9 ms |\n|---|---|---|---|---|---|---|");
        for r in &self.results {
            let q = |o: &crate::load::Outcome, x: f64| o.ms(x);
            let add = |x: f64| d.map_or(f64::NAN, |d| q(&r.sequential, x) - q(&d.sequential, x));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.name,
                f(q(&r.sequential, 0.5)),
                f(q(&r.sequential, 0.99)),
                f(q(&r.sequential, 0.999)),
                f(add(0.5)),
                f(add(0.99)),
                f(add(0.999))
            );
        }

        let _ = writeln!(s, "\n## Maximum throughput (closed loop; connections halved from 32 until p99 < 10 ms and errors < 1 %)\n");
        let _ = writeln!(s, "| system | connections | RPS | p50 ms | p99 ms | errors | CPU µs/request | Sluice ÷ system |\n|---|---|---|---|---|---|---|---|");
        let sl = self.sluice().map_or(f64::NAN, |r| r.max.rps());
        for r in &self.results {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.2} % | {} | {} |",
                r.name,
                r.max_conns,
                f(r.max.rps()),
                f(r.max.ms(0.5)),
                f(r.max.ms(0.99)),
                r.max.error_rate() * 100.0,
                opt(r.cpu_us_per_req),
                f(sl / r.max.rps())
            );
        }
        if let Some(d) = d {
            let worst = self
                .results
                .iter()
                .filter(|r| !r.name.starts_with("direct"))
                .map(|r| r.max.rps())
                .fold(0.0, f64::max);
            let ratio = d.max.rps() / worst.max(1.0);
            let _ = writeln!(
                s,
                "\nUpstream headroom: direct {} RPS = {:.1}× the fastest gateway{}",
                f(d.max.rps()),
                ratio,
                if ratio < 3.0 {
                    " — **mock-bound**: the upstream is under 3× faster than a gateway, so gateway throughput figures are capped by the upstream"
                } else {
                    " (≥ 3×: not mock-bound)"
                }
            );
        }

        let _ = writeln!(
            s,
            "\n## Fixed offered load (open loop, latency from the intended send time)\n"
        );
        let _ = writeln!(s, "| system | offered RPS | achieved RPS | p50 ms | p99 ms | p99.9 ms | added p99 ms | errors |\n|---|---|---|---|---|---|---|---|");
        for r in &self.results {
            for (rate, o) in &r.rates {
                let base = d
                    .and_then(|d| d.rates.iter().find(|(x, _)| x == rate))
                    .map(|(_, o)| o.ms(0.99));
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.name,
                    rate,
                    f(o.rps()),
                    f(o.ms(0.5)),
                    f(o.ms(0.99)),
                    f(o.ms(0.999)),
                    opt(base.map(|b| o.ms(0.99) - b)),
                    o.errors
                );
            }
        }

        let _ = writeln!(s, "\n## Streaming (64 chunks per answer)\n");
        let _ = writeln!(s, "| system | TTFB p50 ms | added TTFB ms | whole stream p50 ms | mean gap at 1 ms pacing | streams/s (closed loop) |\n|---|---|---|---|---|---|");
        for r in &self.results {
            let added = d.map_or(f64::NAN, |d| r.stream_ttfb_ms - d.stream_ttfb_ms);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                r.name,
                f(r.stream_ttfb_ms),
                f(added),
                f(r.stream_total_ms),
                r.stream_gap_ms
                    .map_or("–".into(), |g| format!("{} ms", f(g))),
                f(r.stream_max.rps())
            );
        }

        let _ = writeln!(s, "\n## Memory (RSS)\n");
        let _ = writeln!(
            s,
            "| system | idle MiB | under load MiB | after load MiB |\n|---|---|---|---|"
        );
        for r in &self.results {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                r.name,
                opt(r.rss_idle),
                opt(r.rss_load),
                opt(r.rss_after)
            );
        }
        let _ = writeln!(
            s,
            "\nUpstream (sluice-mock) RSS at the end: {:.1} MiB",
            self.mock_rss
        );
        if let Some(r) = self.sluice() {
            if !r.extras.is_empty() {
                let _ = writeln!(s, "\n## Sluice only\n\n| measure | value |\n|---|---|");
                for (k, v) in &r.extras {
                    let _ = writeln!(s, "| {k} | {v} |");
                }
            }
        }
        let _ = writeln!(s, "\n## Targets (issue 8)\n");
        let _ = writeln!(s, "| target | measured | met |\n|---|---|---|");
        for (name, measured, met) in self.targets() {
            let _ = writeln!(
                s,
                "| {name} | {measured} | {} |",
                if met { "yes" } else { "**no**" }
            );
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(s, "\n## Not measured in this run\n");
            for k in &self.skipped {
                let _ = writeln!(s, "- {k}");
            }
        }
        s
    }

    fn targets(&self) -> Vec<(String, String, bool)> {
        let mut t = Vec::new();
        let (Some(d), Some(r)) = (self.direct(), self.sluice()) else {
            return t;
        };
        let add = |x: f64| r.sequential.ms(x) - d.sequential.ms(x);
        t.push((
            "added p50 ≤ 0.1 ms (one at a time)".into(),
            format!("{} ms", f(add(0.5))),
            add(0.5) <= 0.1,
        ));
        t.push((
            "added p99 ≤ 0.3 ms (one at a time)".into(),
            format!("{} ms", f(add(0.99))),
            add(0.99) <= 0.3,
        ));
        if let (Some((_, o)), Some((_, b))) = (
            r.rates.iter().find(|(x, _)| *x == 1000),
            d.rates.iter().find(|(x, _)| *x == 1000),
        ) {
            let a = o.ms(0.99) - b.ms(0.99);
            t.push((
                "added p99 ≤ 0.5 ms at 1k RPS".into(),
                format!("{} ms", f(a)),
                a <= 0.5,
            ));
        }
        t.push((
            "≥ 8k RPS, scenario (a)".into(),
            f(r.max.rps()),
            r.max.rps() >= 8000.0,
        ));
        if let Some(c) = r.cpu_us_per_req {
            t.push((
                "≤ 60 µs CPU per request, scenario (a)".into(),
                format!("{} µs", f(c)),
                c <= 60.0,
            ));
        }
        if let Some(i) = r.rss_idle {
            t.push((
                "RSS ≤ 20 MiB idle".into(),
                format!("{} MiB", f(i)),
                i <= 20.0,
            ));
        }
        if let Some((_, v)) = r.extras.iter().find(|(k, _)| k.starts_with("RSS with")) {
            let mib: f64 = v
                .split_whitespace()
                .next()
                .and_then(|x| x.parse().ok())
                .unwrap_or(f64::NAN);
            t.push((
                "RSS ≤ 64 MiB with 1k open streams".into(),
                v.clone(),
                mib <= 64.0,
            ));
        }
        if let Some((_, v)) = r.extras.iter().find(|(k, _)| k.starts_with("cold start")) {
            let ms: f64 = v
                .split_whitespace()
                .next()
                .and_then(|x| x.parse().ok())
                .unwrap_or(f64::NAN);
            t.push(("cold start ≤ 50 ms".into(), v.clone(), ms <= 50.0));
        }
        if let Some(g) = self
            .results
            .iter()
            .find(|x| x.name.starts_with("Sluice (d)"))
        {
            t.push((
                "≥ 5k RPS, scenario (d) governance on".into(),
                f(g.max.rps()),
                g.max.rps() >= 5000.0,
            ));
            let share = g.max.rps() / r.max.rps().max(1e-9);
            t.push((
                "(d) within 20 % of (a) throughput (issue 6)".into(),
                format!("{:.0} %", share * 100.0),
                share >= 0.8,
            ));
            if let Some(fl) = self
                .results
                .iter()
                .find(|x| x.name.starts_with("Sluice (f)"))
            {
                let share = fl.max.rps() / g.max.rps().max(1e-9);
                t.push((
                    "(f) fleet within 15 % of (d) throughput (issue 16)".into(),
                    format!("{:.0} %", share * 100.0),
                    share >= 0.85,
                ));
            }
        }
        if let (Some(e), Some(d)) = (
            self.results
                .iter()
                .find(|x| x.name.starts_with("Sluice (e)")),
            self.direct(),
        ) {
            t.push((
                "(e) cache hits ≥ 30k/s (issue 15)".into(),
                f(e.max.rps()),
                e.max.rps() >= 30_000.0,
            ));
            t.push((
                "(e) cache hits faster than direct-to-mock (throughput)".into(),
                format!("{:.0} %", e.max.rps() / d.max.rps().max(1e-9) * 100.0),
                e.max.rps() > d.max.rps(),
            ));
            let added = e.sequential.ms(0.5) - d.sequential.ms(0.5);
            t.push((
                "(e) cache hit added p50 < 0.1 ms (one at a time)".into(),
                format!("{added:.3} ms"),
                added < 0.1,
            ));
        }
        for (peer, factor) in [("Portkey", 20.0), ("LiteLLM", 100.0)] {
            if let Some(p) = self.results.iter().find(|x| x.name == peer) {
                let ratio = r.max.rps() / p.max.rps().max(1e-9);
                t.push((
                    format!("≥ {factor:.0}× {peer}'s throughput"),
                    format!("{ratio:.1}×"),
                    ratio >= factor,
                ));
            }
        }
        t
    }

    pub fn write(&self, out: &Path) -> anyhow::Result<()> {
        let plots = out.parent().unwrap_or(Path::new(".")).join("plots");
        std::fs::create_dir_all(&plots)?;
        std::fs::write(plots.join("latency-vs-load.svg"), self.latency_svg())?;
        std::fs::write(plots.join("memory.svg"), self.memory_svg())?;
        let mut text = self.render();
        text.push_str("\n## Plots\n\n![p99 latency vs offered load](plots/latency-vs-load.svg)\n\n![memory](plots/memory.svg)\n");
        text.push_str("\nRegenerate with `cargo run --release -p sluice-bench` (peers are installed into `bench/.peers/` on first use). How to read these figures, and what profiles say about the targets missed: [bench/README.md](README.md).\n");
        std::fs::write(out, text)?;
        Ok(())
    }

    fn latency_svg(&self) -> String {
        let (w, h, l, b) = (640.0, 360.0, 60.0, 40.0);
        let series: Vec<(&str, Vec<(f64, f64)>)> = self
            .results
            .iter()
            .map(|r| {
                (
                    r.name.as_str(),
                    r.rates
                        .iter()
                        .map(|(x, o)| (*x as f64, o.ms(0.99)))
                        .collect(),
                )
            })
            .collect();
        let max_x = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|x| x.0))
            .fold(1.0, f64::max);
        let max_y = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|x| x.1))
            .fold(0.1, f64::max)
            * 1.1;
        let sx = |x: f64| l + x / max_x * (w - l - 20.0);
        let sy = |y: f64| h - b - y / max_y * (h - b - 20.0);
        let colors = ["#555", "#d62728", "#1f77b4", "#2ca02c", "#9467bd"];
        let mut s = format!("<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n");
        let _ = writeln!(s, "<line x1='{l}' y1='{}' x2='{}' y2='{}' stroke='black'/><line x1='{l}' y1='20' x2='{l}' y2='{}' stroke='black'/>", h - b, w - 20.0, h - b, h - b);
        let _ = writeln!(s, "<text x='{}' y='{}' text-anchor='middle'>offered load (requests/s)</text><text x='14' y='{}' transform='rotate(-90 14 {})' text-anchor='middle'>p99 latency (ms)</text>", (w + l) / 2.0, h - 8.0, h / 2.0, h / 2.0);
        for i in 0..=4 {
            let y = max_y * f64::from(i) / 4.0;
            let _ = writeln!(
                s,
                "<text x='{}' y='{}' text-anchor='end'>{}</text>",
                l - 4.0,
                sy(y) + 4.0,
                f(y)
            );
            let x = max_x * f64::from(i) / 4.0;
            let _ = writeln!(
                s,
                "<text x='{}' y='{}' text-anchor='middle'>{:.0}</text>",
                sx(x),
                h - b + 14.0,
                x
            );
        }
        for (i, (name, pts)) in series.iter().enumerate() {
            let c = colors[i % colors.len()];
            let path: Vec<String> = pts
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
                .collect();
            if !path.is_empty() {
                let _ = writeln!(
                    s,
                    "<polyline fill='none' stroke='{c}' stroke-width='2' points='{}'/>",
                    path.join(" ")
                );
            }
            let _ = writeln!(
                s,
                "<text x='{}' y='{}' fill='{c}'>{name}</text>",
                l + 10.0,
                34.0 + 14.0 * i as f64
            );
        }
        s.push_str("</svg>\n");
        s
    }

    fn memory_svg(&self) -> String {
        let rows: Vec<(&str, f64)> = self
            .results
            .iter()
            .filter_map(|r| r.rss_load.or(r.rss_idle).map(|m| (r.name.as_str(), m)))
            .collect();
        let (w, bar) = (640.0, 28.0);
        let h = 40.0 + bar * rows.len() as f64 * 1.4;
        let max = rows.iter().map(|r| r.1).fold(1.0, f64::max);
        let mut s = format!("<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n<text x='10' y='18'>RSS under load (MiB)</text>\n");
        for (i, (name, m)) in rows.iter().enumerate() {
            let y = 30.0 + i as f64 * bar * 1.4;
            let len = m / max * (w - 260.0);
            let _ = writeln!(s, "<text x='10' y='{}'>{name}</text><rect x='140' y='{y}' width='{len:.1}' height='{bar}' fill='#1f77b4'/><text x='{}' y='{}'>{m:.1}</text>", y + bar * 0.65, 146.0 + len, y + bar * 0.65);
        }
        s.push_str("</svg>\n");
        s
    }
}
