//! CPU and memory of the processes under load, sampled from /proc once a
//! second: per watched group (a service by its pid file, or every process of
//! a command name such as `postgres`), the CPU it used (average and busiest
//! second, in percent of one core), its busiest thread, and its peak resident
//! memory. Parsing and accounting are pure; `sample` does the reading.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The fields of `/proc/<pid>/stat` (or `/proc/<pid>/task/<tid>/stat`) used here.
#[derive(Debug, Clone, PartialEq)]
pub struct PidStat {
    pub comm: String,
    pub state: char,
    /// utime + stime, in clock ticks.
    pub ticks: u64,
}

/// Parses a stat line; the command name may contain spaces and parentheses,
/// so fields are counted from the last `)`.
pub fn parse_pid_stat(content: &str) -> Option<PidStat> {
    let open = content.find('(')?;
    let close = content.rfind(')')?;
    let comm = content.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = content.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let state = rest.first()?.chars().next()?;
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some(PidStat {
        comm,
        state,
        ticks: utime + stime,
    })
}

/// `VmRSS` of `/proc/<pid>/status`, in kB.
pub fn parse_vm_rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
}

/// `Pss` of `/proc/<pid>/smaps_rollup`, in kB: the resident memory with each
/// shared page divided among the processes that share it, so that the PSS of
/// a group of processes adds up (their RSS does not).
pub fn parse_pss_kb(smaps_rollup: &str) -> Option<u64> {
    smaps_rollup
        .lines()
        .find_map(|line| line.strip_prefix("Pss:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
}

/// The machine's CPU time from the first line of `/proc/stat`, in ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    pub busy: u64,
    pub iowait: u64,
    pub total: u64,
}

pub fn parse_proc_stat(content: &str) -> Option<CpuTimes> {
    let line = content.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    Some(CpuTimes {
        busy,
        iowait: at(4),
        total: busy + at(3) + at(4),
    })
}

/// What to watch.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// One process by pid.
    Pid { name: String, pid: u32 },
    /// The pid in a file, read at every sample (the process may restart).
    PidFile { name: String, path: PathBuf },
    /// Every live process whose command name is `comm` (e.g. `postgres`).
    Comm { name: String, comm: String },
}

impl Target {
    pub fn name(&self) -> &str {
        match self {
            Target::Pid { name, .. } | Target::PidFile { name, .. } | Target::Comm { name, .. } => {
                name
            }
        }
    }
}

/// One process (or thread) at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcSample {
    pub ticks: u64,
    pub rss_kb: u64,
    pub pss_kb: u64,
    /// Threads by tid: (name, ticks).
    pub threads: HashMap<u32, (String, u64)>,
}

/// Every watched group at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// Since the start of sampling.
    pub at: Duration,
    pub groups: BTreeMap<String, HashMap<u32, ProcSample>>,
    pub machine: CpuTimes,
}

/// The usage of one group over the sampled interval.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GroupUsage {
    pub name: String,
    /// The pids seen (at most 16 listed).
    pub pids: Vec<u32>,
    /// Average CPU over the interval, percent of one core.
    pub cpu_avg_pct: f64,
    /// CPU of the busiest sampling interval (about one second).
    pub cpu_peak_pct: f64,
    /// The thread that used the most CPU over the interval.
    pub hottest_thread: String,
    pub hottest_thread_avg_pct: f64,
    /// Peak of the group's summed resident memory (shared pages of several
    /// processes, e.g. PostgreSQL's shared buffers, count once per process).
    pub rss_peak_mb: f64,
    /// Peak of the group's summed proportional set size (shared pages
    /// divided among their processes): a group's real footprint.
    #[serde(default)]
    pub pss_peak_mb: f64,
}

/// The machine over the interval, percent of one core (it has `cores` x 100 %).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MachineUsage {
    pub cores: u64,
    pub busy_avg_pct: f64,
    pub busy_peak_pct: f64,
    pub iowait_avg_pct: f64,
}

#[derive(Debug, Clone, Default)]
struct GroupAccount {
    pids: Vec<u32>,
    ticks: u64,
    peak_interval_pct: f64,
    thread_ticks: HashMap<(u32, u32), (String, u64)>,
    rss_peak_kb: u64,
    pss_peak_kb: u64,
}

/// Accumulates usage from consecutive samples.
#[derive(Debug, Clone)]
pub struct Accounting {
    ticks_per_second: f64,
    cores: u64,
    first: Option<Duration>,
    last: Option<Sample>,
    groups: BTreeMap<String, GroupAccount>,
    machine_busy: u64,
    machine_iowait: u64,
    machine_peak_pct: f64,
}

/// Ticks a process used between two samples; a process that is new in `next`
/// started during the interval and counts whole.
fn delta(prev: Option<&ProcSample>, next: &ProcSample) -> u64 {
    match prev {
        Some(prev) => next.ticks.saturating_sub(prev.ticks),
        None => next.ticks,
    }
}

impl Accounting {
    pub fn new(ticks_per_second: u64, cores: u64) -> Self {
        Self {
            ticks_per_second: ticks_per_second.max(1) as f64,
            cores,
            first: None,
            last: None,
            groups: BTreeMap::new(),
            machine_busy: 0,
            machine_iowait: 0,
            machine_peak_pct: 0.0,
        }
    }

    fn pct(&self, ticks: u64, over: Duration) -> f64 {
        let seconds = over.as_secs_f64();
        if seconds <= 0.0 {
            0.0
        } else {
            ticks as f64 / self.ticks_per_second / seconds * 100.0
        }
    }

    pub fn add(&mut self, sample: Sample) {
        for (name, procs) in &sample.groups {
            let account = self.groups.entry(name.clone()).or_default();
            for pid in procs.keys() {
                if !account.pids.contains(pid) {
                    account.pids.push(*pid);
                }
            }
            let rss: u64 = procs.values().map(|p| p.rss_kb).sum();
            account.rss_peak_kb = account.rss_peak_kb.max(rss);
            let pss: u64 = procs.values().map(|p| p.pss_kb).sum();
            account.pss_peak_kb = account.pss_peak_kb.max(pss);
        }
        let Some(prev) = self.last.take() else {
            self.first = Some(sample.at);
            self.last = Some(sample);
            return;
        };
        let interval = sample.at.saturating_sub(prev.at);
        let busy = sample.machine.busy.saturating_sub(prev.machine.busy);
        self.machine_busy += busy;
        self.machine_iowait += sample.machine.iowait.saturating_sub(prev.machine.iowait);
        // Sampling jitter can make one interval look busier than the machine can be.
        let ceiling = self.cores.max(1) as f64 * 100.0;
        self.machine_peak_pct = self
            .machine_peak_pct
            .max(self.pct(busy, interval).min(ceiling));
        let empty = HashMap::new();
        for (name, procs) in &sample.groups {
            let before = prev.groups.get(name).unwrap_or(&empty);
            let mut ticks = 0;
            let mut threads = Vec::new();
            for (pid, proc_now) in procs {
                let proc_before = before.get(pid);
                ticks += delta(proc_before, proc_now);
                for (tid, (thread_name, thread_ticks)) in &proc_now.threads {
                    let earlier = proc_before
                        .and_then(|p| p.threads.get(tid))
                        .map_or(0, |(_, t)| *t);
                    threads.push((
                        (*pid, *tid),
                        thread_name.clone(),
                        thread_ticks.saturating_sub(earlier),
                    ));
                }
            }
            // As for the machine: no interval can use more than every core.
            let interval_pct = self
                .pct(ticks, interval)
                .min(self.cores.max(1) as f64 * 100.0);
            let account = self.groups.entry(name.clone()).or_default();
            account.ticks += ticks;
            account.peak_interval_pct = account.peak_interval_pct.max(interval_pct);
            for (key, thread_name, used) in threads {
                let entry = account
                    .thread_ticks
                    .entry(key)
                    .or_insert_with(|| (thread_name.clone(), 0));
                entry.0 = thread_name;
                entry.1 += used;
            }
        }
        self.last = Some(sample);
    }

    fn span(&self) -> Duration {
        match (self.first, self.last.as_ref()) {
            (Some(first), Some(last)) => last.at.saturating_sub(first),
            _ => Duration::ZERO,
        }
    }

    pub fn groups(&self) -> Vec<GroupUsage> {
        let span = self.span();
        self.groups
            .iter()
            .map(|(name, account)| {
                let (hottest_thread, hottest_ticks) = account
                    .thread_ticks
                    .iter()
                    .max_by_key(|(_, (_, ticks))| *ticks)
                    .map(|((pid, tid), (thread, ticks))| {
                        (format!("{thread} ({pid}/{tid})"), *ticks)
                    })
                    .unwrap_or_default();
                let mut pids = account.pids.clone();
                pids.sort_unstable();
                pids.truncate(16);
                GroupUsage {
                    name: name.clone(),
                    pids,
                    cpu_avg_pct: round1(self.pct(account.ticks, span)),
                    cpu_peak_pct: round1(account.peak_interval_pct),
                    hottest_thread,
                    hottest_thread_avg_pct: round1(self.pct(hottest_ticks, span)),
                    rss_peak_mb: round1(account.rss_peak_kb as f64 / 1024.0),
                    pss_peak_mb: round1(account.pss_peak_kb as f64 / 1024.0),
                }
            })
            .collect()
    }

    pub fn machine(&self) -> MachineUsage {
        let span = self.span();
        MachineUsage {
            cores: self.cores,
            busy_avg_pct: round1(self.pct(self.machine_busy, span)),
            busy_peak_pct: round1(self.machine_peak_pct),
            iowait_avg_pct: round1(self.pct(self.machine_iowait, span)),
        }
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

// ---------------------------------------------------------------------------
// Reading /proc.

fn read_proc(pid: u32, with_threads: bool, with_pss: bool) -> Option<ProcSample> {
    let base = PathBuf::from(format!("/proc/{pid}"));
    let stat = parse_pid_stat(&std::fs::read_to_string(base.join("stat")).ok()?)?;
    if stat.state == 'Z' || stat.state == 'X' {
        return None;
    }
    let rss_kb = std::fs::read_to_string(base.join("status"))
        .ok()
        .and_then(|s| parse_vm_rss_kb(&s))
        .unwrap_or(0);
    let pss_kb = if with_pss {
        std::fs::read_to_string(base.join("smaps_rollup"))
            .ok()
            .and_then(|s| parse_pss_kb(&s))
            .unwrap_or(0)
    } else {
        0
    };
    let mut threads = HashMap::new();
    if with_threads && let Ok(tasks) = std::fs::read_dir(base.join("task")) {
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(t) = std::fs::read_to_string(task.path().join("stat"))
                .ok()
                .and_then(|s| parse_pid_stat(&s))
            {
                threads.insert(tid, (t.comm, t.ticks));
            }
        }
    }
    Some(ProcSample {
        ticks: stat.ticks,
        rss_kb,
        pss_kb,
        threads,
    })
}

fn pids_by_comm(comm: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim_end() == comm)
                .unwrap_or(false)
        })
        .collect()
}

fn read_pid_file(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Reads every target once. The machine's counters are read first and `at`
/// is taken right after them, so that a slow read of many processes on a busy
/// machine does not skew the machine's percentages.
///
/// `with_pss` also reads each process's proportional set size. That read is
/// expensive (the kernel walks every mapping: about 40 ms for a JVM with a
/// 1 GB heap), so samplers take it only now and then; a sample without it
/// reports a PSS of 0, which never raises a peak.
pub fn sample(targets: &[Target], with_pss: bool, clock: impl Fn() -> Duration) -> Sample {
    let machine = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| parse_proc_stat(&s))
        .unwrap_or_default();
    let at = clock();
    let mut groups = BTreeMap::new();
    for target in targets {
        let pids = match target {
            Target::Pid { pid, .. } => vec![*pid],
            Target::PidFile { path, .. } => read_pid_file(path).into_iter().collect(),
            Target::Comm { comm, .. } => pids_by_comm(comm),
        };
        let procs: HashMap<u32, ProcSample> = pids
            .into_iter()
            .filter_map(|pid| read_proc(pid, true, with_pss).map(|p| (pid, p)))
            .collect();
        groups.insert(target.name().to_owned(), procs);
    }
    Sample {
        at,
        groups,
        machine,
    }
}

/// Every `<name>.pid` file of a directory (e.g. scripts/stack.sh's run dir).
pub fn pid_file_targets(dir: &Path) -> std::io::Result<Vec<Target>> {
    let mut targets: Vec<Target> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|entry| {
            let path = entry.path();
            let name = path.file_name()?.to_str()?.strip_suffix(".pid")?.to_owned();
            Some(Target::PidFile { name, path })
        })
        .collect();
    targets.sort_by(|a, b| a.name().cmp(b.name()));
    Ok(targets)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every common Linux).
pub fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (tokio-rt (worker)) S 1 4242 4242 0 -1 4194560 1580 0 0 0 \
                        250 75 0 0 20 0 9 0 12345 1000000 2000 18446744073709551615";

    #[test]
    fn a_stat_line_gives_comm_state_and_cpu_ticks() {
        let stat = parse_pid_stat(STAT).expect("parsed");
        assert_eq!(stat.comm, "tokio-rt (worker)");
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.ticks, 325);
        assert_eq!(parse_pid_stat("garbage"), None);
    }

    #[test]
    fn the_resident_set_is_read_from_the_status_file() {
        let status =
            "Name:\torder-service\nVmPeak:\t  900000 kB\nVmRSS:\t   23456 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss_kb(status), Some(23_456));
        assert_eq!(parse_vm_rss_kb("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn the_proportional_set_is_read_from_smaps_rollup() {
        let rollup = "55d4a0000000-7ffc00000000 ---p 00000000 00:00 0  [rollup]\n\
                      Rss:               36476 kB\nPss:                9120 kB\nPss_Anon:  1 kB\n";
        assert_eq!(parse_pss_kb(rollup), Some(9_120));
        assert_eq!(parse_pss_kb("Rss: 1 kB\n"), None);
    }

    #[test]
    fn machine_busy_time_excludes_idle_and_iowait() {
        let times =
            parse_proc_stat("cpu  100 5 50 1000 30 2 3 0 0 0\ncpu0 1 2 3 4\n").expect("parsed");
        assert_eq!(times.busy, 160);
        assert_eq!(times.iowait, 30);
        assert_eq!(times.total, 1190);
    }

    fn proc_sample(ticks: u64, rss_kb: u64, threads: &[(u32, &str, u64)]) -> ProcSample {
        ProcSample {
            ticks,
            rss_kb,
            pss_kb: rss_kb / 2,
            threads: threads
                .iter()
                .map(|(tid, name, t)| (*tid, ((*name).to_owned(), *t)))
                .collect(),
        }
    }

    fn sample_at(seconds: u64, busy: u64, procs: Vec<(u32, ProcSample)>) -> Sample {
        Sample {
            at: Duration::from_secs(seconds),
            groups: BTreeMap::from([("svc".to_owned(), procs.into_iter().collect())]),
            machine: CpuTimes {
                busy,
                iowait: 0,
                total: busy,
            },
        }
    }

    #[test]
    fn usage_is_cpu_per_second_of_the_interval_with_peak_and_hottest_thread() {
        let mut acc = Accounting::new(100, 2);
        acc.add(sample_at(
            0,
            0,
            vec![(
                10,
                proc_sample(1_000, 50_000, &[(10, "main", 0), (11, "worker", 1_000)]),
            )],
        ));
        // 1 s: 30 ticks = 30 %.
        acc.add(sample_at(
            1,
            100,
            vec![(
                10,
                proc_sample(1_030, 60_000, &[(10, "main", 10), (11, "worker", 1_020)]),
            )],
        ));
        // 1 s: 90 ticks = 90 %, and a new process of the group appears with 10 ticks.
        acc.add(sample_at(
            2,
            300,
            vec![
                (
                    10,
                    proc_sample(1_110, 40_000, &[(10, "main", 20), (11, "worker", 1_090)]),
                ),
                (12, proc_sample(10, 30_000, &[(12, "helper", 10)])),
            ],
        ));
        let usage = acc.groups();
        assert_eq!(usage.len(), 1);
        let svc = &usage[0];
        assert_eq!(svc.pids, vec![10, 12]);
        // 30 + 80 + 10 ticks over 2 s.
        assert_eq!(svc.cpu_avg_pct, 60.0);
        assert_eq!(svc.cpu_peak_pct, 90.0);
        assert_eq!(svc.hottest_thread, "worker (10/11)");
        assert_eq!(svc.hottest_thread_avg_pct, 45.0);
        // The peak of the summed RSS: 40 + 30 MB in the last sample beats 60 MB before.
        assert_eq!(
            svc.rss_peak_mb,
            (70_000.0_f64 / 1024.0 * 10.0).round() / 10.0
        );
        let machine = acc.machine();
        assert_eq!(machine.busy_avg_pct, 150.0);
        assert_eq!(machine.busy_peak_pct, 200.0);
    }

    #[test]
    fn a_single_sample_gives_memory_but_no_cpu() {
        let mut acc = Accounting::new(100, 2);
        acc.add(sample_at(0, 0, vec![(1, proc_sample(500, 2_048, &[]))]));
        let usage = acc.groups();
        assert_eq!(usage[0].cpu_avg_pct, 0.0);
        assert_eq!(usage[0].rss_peak_mb, 2.0);
    }

    #[test]
    fn this_process_can_be_read_from_proc() {
        let me = std::process::id();
        let s = sample(
            &[Target::Pid {
                name: "me".into(),
                pid: me,
            }],
            true,
            || Duration::ZERO,
        );
        let procs = &s.groups["me"];
        assert!(procs[&me].rss_kb > 0);
        assert!(procs[&me].pss_kb > 0 && procs[&me].pss_kb <= procs[&me].rss_kb);
        assert!(!procs[&me].threads.is_empty());
        assert!(s.machine.total > 0);
        let without = sample(
            &[Target::Pid {
                name: "me".into(),
                pid: me,
            }],
            false,
            || Duration::ZERO,
        );
        assert_eq!(without.groups["me"][&me].pss_kb, 0);
        assert!(without.groups["me"][&me].rss_kb > 0);
    }
}
