//! `target/bench/report.html`: the load harness's figures as charts, drawn
//! into SVG by the `plotters` crate. Latency over time for the phases where
//! something happens beside the load, with each swap, compile and loop
//! marked on the time axis, and throughput per phase against the baselines.

use std::fmt::Write as _;

use plotters::prelude::*;

use crate::Error;

/// Width of the windows latency is summarised over, in seconds.
const WINDOW: f64 = 0.1;

/// Something that happened beside the load, at a point or over a span.
#[derive(Clone, Debug)]
pub struct Mark {
    /// Seconds since the phase started.
    pub from: f64,
    /// Where a span ends; `None` for a point (a swap).
    pub to: Option<f64>,
}

/// One phase's requests over time, and what happened beside them.
pub struct Timeline {
    /// The phase's name.
    pub name: String,
    /// What the marks are, for the legend: `swap`, `compile running`, ….
    pub mark_label: &'static str,
    /// Every successful request: (seconds since the phase started, latency in µs).
    pub samples: Vec<(f64, f64)>,
    /// The events beside the load.
    pub marks: Vec<Mark>,
}

/// One bar of the throughput chart.
pub struct Bar {
    /// The phase or run.
    pub name: String,
    /// Requests per second.
    pub rps: f64,
    /// Whether it is a baseline (native hyper, `wasmtime serve`).
    pub baseline: bool,
}

/// p50, p99 and max latency of each [`WINDOW`], as (window start, µs).
type Summary = [Vec<(f64, f64)>; 3];

fn summarise(samples: &[(f64, f64)]) -> Summary {
    let mut windows: Vec<Vec<f64>> = Vec::new();
    for (at, latency) in samples {
        let index = (at / WINDOW).max(0.0) as usize;
        if windows.len() <= index {
            windows.resize_with(index + 1, Vec::new);
        }
        windows[index].push(*latency);
    }
    let mut summary: Summary = Default::default();
    for (index, window) in windows.iter_mut().enumerate() {
        if window.is_empty() {
            continue;
        }
        window.sort_by(f64::total_cmp);
        let at = index as f64 * WINDOW;
        let rank =
            |p: f64| window[((window.len() as f64 * p).ceil() as usize).clamp(1, window.len()) - 1];
        summary[0].push((at, rank(0.5)));
        summary[1].push((at, rank(0.99)));
        summary[2].push((at, rank(1.0)));
    }
    summary
}

/// One latency-over-time chart, as SVG.
fn latency_chart(timeline: &Timeline) -> Result<String, Error> {
    let summary = summarise(&timeline.samples);
    let end = timeline
        .samples
        .iter()
        .map(|(at, _)| *at)
        .chain(timeline.marks.iter().map(|m| m.to.unwrap_or(m.from)))
        .fold(1.0, f64::max);
    let highest = summary[2].iter().map(|(_, us)| *us).fold(10.0, f64::max);
    let (low, high) = (10.0, highest * 2.0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 340)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&timeline.name, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..end, (low..high).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("seconds into the phase")
            .y_desc("latency, µs (log)")
            .y_label_formatter(&|us| format!("{us:.0}"))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        let marked = RGBColor(217, 139, 28);
        for mark in &timeline.marks {
            match mark.to {
                Some(to) => {
                    chart.draw_series(std::iter::once(Rectangle::new(
                        [(mark.from, low), (to, high)],
                        marked.mix(0.15).filled(),
                    )))?;
                }
                None => {
                    chart.draw_series(std::iter::once(PathElement::new(
                        vec![(mark.from, low), (mark.from, high)],
                        marked.mix(0.6),
                    )))?;
                }
            }
        }
        // A legend entry for the marks.
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
            .label(timeline.mark_label)
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 18, y + 5)], marked.mix(0.5).filled())
            });
        let lines = [
            ("p50 per 100 ms", RGBColor(59, 111, 212)),
            ("p99 per 100 ms", RGBColor(214, 69, 69)),
            ("max per 100 ms", RGBColor(120, 120, 120)),
        ];
        for ((label, color), points) in lines.into_iter().zip(summary) {
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(1)))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// Requests per second of every phase, baselines in grey.
fn throughput_chart(bars: &[Bar]) -> Result<String, Error> {
    let most = bars.iter().map(|b| b.rps).fold(1.0, f64::max) * 1.45;
    let height = 60 + 26 * bars.len() as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Throughput per phase (requests/s)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(10)
            .build_cartesian_2d(0f64..most, 0f64..bars.len() as f64)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_label_formatter(&|rps| format!("{rps:.0}"))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for (index, bar) in bars.iter().enumerate() {
            let y = (bars.len() - 1 - index) as f64;
            let color = if bar.baseline {
                RGBColor(150, 150, 150)
            } else {
                RGBColor(31, 157, 85)
            };
            chart.draw_series(std::iter::once(Rectangle::new(
                [(0.0, y + 0.15), (bar.rps, y + 0.85)],
                color.filled(),
            )))?;
            chart.draw_series(std::iter::once(Text::new(
                format!("{}: {:.0}", bar.name, bar.rps),
                (bar.rps + most * 0.005, y + 0.75),
                ("sans-serif", 13),
            )))?;
        }
        root.present()?;
    }
    Ok(svg)
}

/// The whole page: the charts, then the markdown report as preformatted text.
pub fn report_html(timelines: &[&Timeline], bars: &[Bar], report: &str) -> Result<String, Error> {
    let mut page = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>wasmhost load report</title>\
         <style>body{font:14px system-ui,sans-serif;margin:1.5rem;color:#1d2330}svg{max-width:100%;height:auto;display:block;margin:1rem 0}\
         pre{background:#f7f8fb;padding:1rem;overflow-x:auto}</style></head><body>\n<h1>wasmhost load report</h1>\n\
         <p>Latency of the hello project's requests, summarised per 100 ms, while something happens beside the load \
         (shaded spans and lines). Figures and ratios are in the table below and in <code>report.md</code>.</p>\n",
    );
    for timeline in timelines {
        page.push_str(&latency_chart(timeline)?);
        page.push('\n');
    }
    page.push_str(&throughput_chart(bars)?);
    let escaped = report
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let _ = write!(
        page,
        "\n<h2>Report</h2>\n<pre>{escaped}</pre>\n</body></html>\n"
    );
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_summarise_their_own_requests() {
        let samples = [(0.01, 100.0), (0.02, 300.0), (0.05, 200.0), (0.25, 50.0)];
        let [p50, p99, max] = summarise(&samples);
        assert_eq!(p50, [(0.0, 200.0), (0.2, 50.0)]);
        assert_eq!(p99, [(0.0, 300.0), (0.2, 50.0)]);
        assert_eq!(max, [(0.0, 300.0), (0.2, 50.0)]);
    }

    #[test]
    fn the_page_has_a_chart_per_timeline_and_the_bars() {
        let timeline = Timeline {
            name: "swapping".into(),
            mark_label: "swap",
            samples: (0..500)
                .map(|i| (i as f64 * 0.01, 100.0 + i as f64))
                .collect(),
            marks: vec![
                Mark {
                    from: 1.0,
                    to: None,
                },
                Mark {
                    from: 2.0,
                    to: Some(3.0),
                },
            ],
        };
        let bars = [
            Bar {
                name: "native".into(),
                rps: 100_000.0,
                baseline: true,
            },
            Bar {
                name: "wasmhost <steady>".into(),
                rps: 50_000.0,
                baseline: false,
            },
        ];
        let page = report_html(&[&timeline], &bars, "| a | <b> |").expect("page");
        assert_eq!(page.matches("<svg").count(), 2, "{page}");
        assert!(
            page.contains("wasmhost &lt;steady&gt;: 50000"),
            "bar labels are escaped text"
        );
        assert!(page.contains("p99 per 100 ms"));
        assert!(page.contains("| a | &lt;b&gt; |"));
    }
}
