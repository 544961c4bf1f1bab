//! The worker's memory while a run goes: `--watch-worker http://127.0.0.1:9100` samples the
//! worker's own `/metrics` once a second (`process_resident_memory_bytes`, read from
//! `/proc/self/statm` by the worker, `worker_account_actors` and `worker_parked_windows`)
//! and the report says how resident memory grew with the number of warm accounts (a live
//! actor, or a parked window waiting for the account's next actor) and whether it stayed
//! flat once idle eviction kept that number steady.
//!
//! "Flat" is measured, not asserted: [`WorkerMemory::drift_mib_per_min`] is the
//! least-squares slope of resident memory over the second half of the run, when the set of
//! live actors has reached its steady state (new accounts arrive as fast as idle ones are
//! stopped).

use std::time::Duration;

use serde::Serialize;
use tokio::{sync::watch, task::JoinHandle, time::Instant};

use super::ApiTarget;

/// How often the worker's metrics are read.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// One reading of the worker's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the watch started (the start of the run).
    pub t_secs: f64,
    /// Resident memory, MiB.
    pub rss_mib: f64,
    /// Account actors alive on the node.
    pub account_actors: u64,
    /// Windows of stopped actors kept for the accounts' next actors.
    pub parked_windows: u64,
}

/// What the watch saw (all sizes in MiB).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WorkerMemory {
    /// The worker's metrics URL.
    pub url: String,
    /// Readings that succeeded.
    pub samples: usize,
    /// Readings that failed (worker unreachable, gauge missing).
    pub failed_samples: u64,
    /// Resident memory at the first reading.
    pub rss_start_mib: f64,
    /// Largest resident memory seen.
    pub rss_peak_mib: f64,
    /// Resident memory at the last reading.
    pub rss_end_mib: f64,
    /// Most account actors alive at once.
    pub account_actors_peak: u64,
    /// Account actors alive at the last reading.
    pub account_actors_end: u64,
    /// Most parked windows at once.
    pub parked_windows_peak: u64,
    /// Most warm accounts (actors + parked windows) at once.
    pub warm_accounts_peak: u64,
    /// Resident memory added per warm account at that peak, KiB:
    /// `(rss then − rss at the start) / (warm accounts then − warm accounts at the start)`.
    pub kib_per_warm_account: f64,
    /// Slope of resident memory over the second half of the run, MiB per minute.
    pub drift_mib_per_min: f64,
    /// One reading every ten seconds, for plotting (the last reading included).
    pub series: Vec<Sample>,
}

/// Reads the worker's metrics in the background until [`MemoryWatch::finish`].
pub struct MemoryWatch {
    url: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<(Vec<Sample>, u64)>,
}

impl MemoryWatch {
    /// Checks the worker answers with both gauges, then starts sampling.
    pub async fn start(target: &ApiTarget, client: reqwest::Client) -> Result<Self, String> {
        let url = format!("{}/metrics", target.http_base());
        read(&client, &url).await?;
        let (stop, mut stopped) = watch::channel(false);
        let task_url = url.clone();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut samples = Vec::new();
            let mut failed = 0u64;
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => match read(&client, &task_url).await {
                        Ok((rss, account_actors, parked_windows)) => samples.push(Sample {
                            t_secs: start.elapsed().as_secs_f64(),
                            rss_mib: rss / (1024.0 * 1024.0),
                            account_actors,
                            parked_windows,
                        }),
                        Err(_) => failed += 1,
                    },
                    _ = stopped.changed() => break,
                }
            }
            (samples, failed)
        });
        Ok(Self { url, stop, task })
    }

    /// Stops sampling and summarises.
    pub async fn finish(self) -> WorkerMemory {
        let _ = self.stop.send(true);
        let (samples, failed) = self.task.await.unwrap_or_default();
        summarise(self.url, &samples, failed)
    }
}

async fn read(client: &reqwest::Client, url: &str) -> Result<(f64, u64, u64), String> {
    let text = client
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("GET {url}: {e}"))?
        .text()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let rss = gauge(&text, "process_resident_memory_bytes")
        .ok_or_else(|| format!("{url} has no process_resident_memory_bytes (is it a FraudSense worker?)"))?;
    let count = |name| gauge(&text, name).unwrap_or(0.0).max(0.0) as u64;
    Ok((rss, count("worker_account_actors"), count("worker_parked_windows")))
}

/// The value of an unlabelled gauge in Prometheus text.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn summarise(url: String, samples: &[Sample], failed_samples: u64) -> WorkerMemory {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return WorkerMemory { url, failed_samples, ..WorkerMemory::default() };
    };
    let warm = |s: &Sample| s.account_actors + s.parked_windows;
    let peak_warm = samples.iter().max_by_key(|s| warm(s)).unwrap_or(first);
    let added = warm(peak_warm).saturating_sub(warm(first));
    let half = &samples[samples.len() / 2..];
    let mut series: Vec<Sample> = samples.iter().step_by(10).copied().collect();
    if series.last() != Some(last) {
        series.push(*last);
    }
    WorkerMemory {
        url,
        samples: samples.len(),
        failed_samples,
        rss_start_mib: first.rss_mib,
        rss_peak_mib: samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max),
        rss_end_mib: last.rss_mib,
        account_actors_peak: samples.iter().map(|s| s.account_actors).max().unwrap_or(0),
        account_actors_end: last.account_actors,
        parked_windows_peak: samples.iter().map(|s| s.parked_windows).max().unwrap_or(0),
        warm_accounts_peak: warm(peak_warm),
        kib_per_warm_account: if added == 0 {
            0.0
        } else {
            (peak_warm.rss_mib - first.rss_mib) * 1024.0 / added as f64
        },
        drift_mib_per_min: slope(half) * 60.0,
        series,
    }
}

/// Least-squares slope of `rss_mib` over `t_secs` (0 with fewer than two points).
fn slope(samples: &[Sample]) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return 0.0;
    }
    let mean_t = samples.iter().map(|s| s.t_secs).sum::<f64>() / n;
    let mean_m = samples.iter().map(|s| s.rss_mib).sum::<f64>() / n;
    let cov: f64 = samples.iter().map(|s| (s.t_secs - mean_t) * (s.rss_mib - mean_m)).sum();
    let var: f64 = samples.iter().map(|s| (s.t_secs - mean_t).powi(2)).sum();
    if var == 0.0 { 0.0 } else { cov / var }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: f64, rss: f64, actors: u64) -> Sample {
        Sample { t_secs: t, rss_mib: rss, account_actors: actors, parked_windows: actors / 2 }
    }

    #[test]
    fn load_memory_gauges_are_read_without_labels_or_comments() {
        let text = "# HELP process_resident_memory_bytes x\n# TYPE process_resident_memory_bytes gauge\n\
                    process_resident_memory_bytes 123456789\nworker_account_actors_total 9\n\
                    worker_account_actors 42\n";
        assert_eq!(gauge(text, "process_resident_memory_bytes"), Some(123_456_789.0));
        assert_eq!(gauge(text, "worker_account_actors"), Some(42.0));
        assert_eq!(gauge(text, "missing"), None);
    }

    #[test]
    fn load_memory_summary_measures_growth_per_actor_and_drift() {
        // 100 MiB with no actors, +1 MiB per 1,000 actors up to 50,000 at t = 50, then flat.
        let mut samples: Vec<Sample> =
            (0..=50).map(|t| s(f64::from(t), 100.0 + f64::from(t), t as u64 * 1000)).collect();
        samples.extend((51..=120).map(|t| s(f64::from(t), 150.0, 50_000)));
        let m = summarise("u".into(), &samples, 2);
        assert_eq!((m.samples, m.failed_samples, m.account_actors_peak), (121, 2, 50_000));
        assert_eq!((m.parked_windows_peak, m.warm_accounts_peak), (25_000, 75_000));
        assert!((m.kib_per_warm_account - 50.0 * 1024.0 / 75_000.0).abs() < 1e-9, "{m:?}");
        assert!((m.rss_peak_mib - 150.0).abs() < 1e-9 && (m.rss_start_mib - 100.0).abs() < 1e-9);
        assert!(m.drift_mib_per_min.abs() < 1e-9, "{m:?}");
        assert_eq!(m.series.first(), samples.first());
        assert_eq!(m.series.last(), samples.last());
        // A leak: +0.5 MiB/s all along.
        let leak: Vec<Sample> = (0..100).map(|t| s(f64::from(t), 100.0 + 0.5 * f64::from(t), 10)).collect();
        assert!((summarise("u".into(), &leak, 0).drift_mib_per_min - 30.0).abs() < 1e-6);
        assert_eq!(summarise("u".into(), &[], 3).samples, 0);
    }
}
