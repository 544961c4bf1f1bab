//! Where the machine's CPU went during a run: the processor time of every local process of
//! the pipeline (api, worker, RabbitMQ, PostgreSQL, Redis) and of this generator, read from
//! `/proc/<pid>/stat` before the first request and after the drain, per decided transaction.
//!
//! Every process whose name matches counts, whoever started it: on a machine shared with
//! other instances of these servers the figures include their work too. A process that ends
//! during the run is counted through its parent's `cutime`/`cstime` when the parent is one
//! of the watched ones (PostgreSQL's backends are children of the postmaster), else lost.
//! Linux only: where `/proc` cannot be read the report has no CPU section.

use std::{collections::HashMap, fs, time::Instant};

use serde::Serialize;

/// What the report calls each process, and the start of its `comm` (the kernel keeps 15
/// bytes of the executable's name, so `fraudsense-worker` reads `fraudsense-work`).
pub const PROCESSES: [(&str, &str); 5] = [
    ("api", "fraudsense-api"),
    ("worker", "fraudsense-work"),
    ("RabbitMQ", "beam.smp"),
    ("PostgreSQL", "postgres"),
    ("Redis", "redis-server"),
];

/// The report's name for this generator's own process.
pub const SELF: &str = "load generator";

/// Clock ticks per second of the times in `/proc/<pid>/stat` (`USER_HZ`, 100 on every
/// Linux architecture this runs on).
const TICKS_PER_SEC: f64 = 100.0;

/// Processor time per process, in ticks, at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    at: Instant,
    /// (report name, pid) → user + system ticks of the process and its waited-for children.
    ticks: HashMap<(&'static str, u32), u64>,
}

/// One process group's share of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessCpu {
    /// The report's name for it (`api`, `RabbitMQ`, ...).
    pub name: String,
    /// Processor seconds it used during the run.
    pub cpu_secs: f64,
    /// Milliseconds of processor time per decided transaction.
    pub ms_per_tx: f64,
}

/// The machine's processor time over a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuUse {
    /// Seconds between the two readings.
    pub wall_secs: f64,
    /// Processors the machine has.
    pub cores: usize,
    /// Each process group, pipeline first, this generator last.
    pub processes: Vec<ProcessCpu>,
    /// All of them together, processor seconds.
    pub total_cpu_secs: f64,
    /// All of them together, milliseconds per decided transaction.
    pub total_ms_per_tx: f64,
    /// All of them together as a share of the machine over the run, percent.
    pub machine_busy_pct: f64,
}

impl Snapshot {
    /// Reads every watched process; `None` where `/proc` is not readable.
    pub fn take() -> Option<Self> {
        let at = Instant::now();
        let mut ticks = HashMap::new();
        let own = std::process::id();
        for entry in fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else { continue };
            let Some((comm, used)) = parse_stat(&stat) else { continue };
            let name = if pid == own {
                SELF
            } else {
                match PROCESSES.iter().find(|(_, prefix)| comm.starts_with(prefix)) {
                    Some((name, _)) => name,
                    None => continue,
                }
            };
            ticks.insert((name, pid), used);
        }
        Some(Self { at, ticks })
    }

    /// What each process group used from `self` to `later`, per decided transaction.
    pub fn until(&self, later: &Snapshot, decided: u64) -> CpuUse {
        let mut used: HashMap<&str, u64> = HashMap::new();
        for (key, after) in &later.ticks {
            // A process started during the run counts from zero.
            let before = self.ticks.get(key).copied().unwrap_or(0);
            *used.entry(key.0).or_default() += after.saturating_sub(before);
        }
        let per_tx = |secs: f64| if decided == 0 { 0.0 } else { secs * 1000.0 / decided as f64 };
        let names = PROCESSES.iter().map(|(name, _)| *name).chain([SELF]);
        let processes: Vec<ProcessCpu> = names
            .map(|name| {
                let cpu_secs = used.get(name).copied().unwrap_or(0) as f64 / TICKS_PER_SEC;
                ProcessCpu { name: name.to_owned(), cpu_secs, ms_per_tx: per_tx(cpu_secs) }
            })
            .collect();
        let wall_secs = later.at.saturating_duration_since(self.at).as_secs_f64();
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let total: f64 = processes.iter().map(|p| p.cpu_secs).sum();
        let capacity = wall_secs * cores as f64;
        CpuUse {
            wall_secs,
            cores,
            processes,
            total_cpu_secs: total,
            total_ms_per_tx: per_tx(total),
            machine_busy_pct: if capacity > 0.0 { 100.0 * total / capacity } else { 0.0 },
        }
    }
}

/// The command name and utime + stime + cutime + cstime of one `/proc/<pid>/stat` line.
/// The name sits in parentheses and may itself hold spaces or parentheses, so the fields
/// are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    // After the name: state (field 3), ..., utime (14), stime (15), cutime (16), cstime (17).
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let mut sum = 0u64;
    for field in fields.get(11..15)? {
        sum = sum.checked_add(field.parse::<i64>().ok()?.max(0).unsigned_abs())?;
    }
    Some((comm, sum))
}

impl CpuUse {
    /// The table's lines: one per process group, then the total.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!("{:<34} {:>10} {:>10}", "CPU per decided transaction", "ms/tx", "cpu s")];
        for p in &self.processes {
            out.push(format!("{:<34} {:>10.3} {:>10.2}", p.name, p.ms_per_tx, p.cpu_secs));
        }
        out.push(format!(
            "{:<34} {:>10.3} {:>10.2}   ({:.0} % of {} cores over {:.1} s)",
            "all",
            self.total_ms_per_tx,
            self.total_cpu_secs,
            self.machine_busy_pct,
            self.cores,
            self.wall_secs
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_name_and_its_four_times() {
        // A name with a space and a parenthesis, as the kernel allows.
        let line = "4242 (beam.smp (x) y) S 1 4242 4242 0 -1 4194560 1 2 3 4 150 25 7 3 20 0 40 0 1 2 3";
        assert_eq!(parse_stat(line), Some(("beam.smp (x) y", 150 + 25 + 7 + 3)));
        assert_eq!(parse_stat("4242 (short) S 1 2"), None);
        assert_eq!(parse_stat("no parentheses at all"), None);
    }

    #[test]
    fn this_process_is_found_and_its_own_work_is_counted() {
        let Some(before) = Snapshot::take() else {
            panic!("/proc is not readable here");
        };
        // Burn some processor time on this thread.
        let deadline = Instant::now() + std::time::Duration::from_millis(200);
        let mut x = 0u64;
        while Instant::now() < deadline {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let Some(after) = Snapshot::take() else { panic!("/proc is not readable here") };
        let cpu = before.until(&after, 10);
        let own = cpu.processes.iter().find(|p| p.name == SELF).unwrap_or_else(|| panic!("{cpu:?}"));
        assert!(own.cpu_secs > 0.0, "{cpu:?}");
        assert!((own.ms_per_tx - own.cpu_secs * 100.0).abs() < 1e-9, "{cpu:?}");
        assert_eq!(cpu.processes.len(), PROCESSES.len() + 1);
        assert_eq!(cpu.processes.last().map(|p| p.name.as_str()), Some(SELF));
        assert!(cpu.machine_busy_pct > 0.0);
    }

    #[test]
    fn nothing_decided_means_no_per_transaction_figure() {
        let Some(s) = Snapshot::take() else { panic!("/proc is not readable here") };
        let cpu = s.until(&s, 0);
        assert!(cpu.processes.iter().all(|p| p.ms_per_tx == 0.0));
        assert_eq!(cpu.total_ms_per_tx, 0.0);
    }
}
