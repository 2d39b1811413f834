//! Samples and the printed table.

use std::time::Duration;

/// One subject's run in one round.
#[derive(Debug, Clone)]
pub struct Sample {
    pub cycles: u64,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
}

impl Sample {
    pub fn new(cycles: u64, elapsed: Duration, latencies: Vec<Duration>) -> Self {
        Sample {
            cycles,
            elapsed,
            latencies,
        }
    }

    pub fn rate(&self) -> f64 {
        self.cycles as f64 / self.elapsed.as_secs_f64()
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// A comparison table: cycles/s (median over rounds), p50/p99 latency, and each subject's ratio
/// to the baseline (median of per-round ratios).
pub struct Table {
    title: String,
    baseline: String,
    rows: Vec<(String, Vec<Sample>)>,
}

impl Table {
    pub fn new(title: &str, baseline: &str) -> Self {
        Table {
            title: title.into(),
            baseline: baseline.into(),
            rows: Vec::new(),
        }
    }

    pub fn add(&mut self, label: &str, samples: Vec<Sample>) {
        self.rows.push((label.into(), samples));
    }

    pub fn print(&self) {
        println!("\n## {}\n", self.title);
        println!("| subject | cycles/s | p50 | p99 | / {} |", self.baseline);
        println!("|---|---:|---:|---:|---:|");
        let base = self.rows.iter().find(|(l, _)| *l == self.baseline);
        for (label, samples) in &self.rows {
            let rate = median(samples.iter().map(Sample::rate).collect());
            let mut lat: Vec<Duration> = samples.iter().flat_map(|s| s.latencies.clone()).collect();
            lat.sort();
            let ratio = base.map_or(f64::NAN, |(_, b)| {
                median(
                    samples
                        .iter()
                        .zip(b)
                        .map(|(s, b)| s.rate() / b.rate())
                        .collect(),
                )
            });
            println!(
                "| {label} | {rate:.0} | {} | {} | {ratio:.3} |",
                us(percentile(&lat, 0.5)),
                us(percentile(&lat, 0.99))
            );
        }
    }
}
