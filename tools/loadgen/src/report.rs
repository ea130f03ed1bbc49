//! The final report of a run: built from the tallies, printed as text,
//! written as JSON (`--json`), and rendered as Markdown tables from one or
//! more JSON reports (`loadgen markdown`, used by scripts/bench.sh).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::procstat::{GroupUsage, MachineUsage};
use crate::stats::{Summary, TimelinePoint};

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunConfig {
    /// `open-loop` (fixed rate) or `closed-loop` (fixed concurrency).
    pub mode: String,
    pub rate: Option<f64>,
    pub concurrency: Option<u32>,
    pub duration_s: f64,
    pub mix: String,
    pub seed: u64,
    pub run_id: String,
    pub order_addr: String,
    pub kafka_brokers: String,
    pub outcome_topic: String,
    pub connections: usize,
    pub drain_timeout_s: f64,
    pub products: u32,
    pub customers: u32,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MachineInfo {
    pub nproc: u64,
    pub mem_total_mb: u64,
    pub mem_available_mb: u64,
    pub load_average_start: String,
    pub load_average_end: String,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SendReport {
    /// Sends the schedule asked for (open loop) or that were made (closed loop).
    pub scheduled: u64,
    /// CreateOrder calls actually made.
    pub sent: u64,
    /// `scheduled / duration`.
    pub offered_rate: f64,
    /// `sent` divided by the time from the start to the last send.
    pub achieved_rate: f64,
    pub send_seconds: f64,
    /// How late each send left against its scheduled time.
    pub schedule_lag: Summary,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RpcReport {
    pub ok: u64,
    pub errors: u64,
    /// By gRPC code name, e.g. `Unavailable`, `DeadlineExceeded`.
    pub errors_by_code: BTreeMap<String, u64>,
    /// CreateOrder latency, from the moment the call was made to its answer.
    pub latency: Summary,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KindReport {
    pub approved: u64,
    pub rejected: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NeverEnded {
    pub order_id: String,
    pub kind: String,
    pub scheduled_s: f64,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SagaReport {
    pub completed: u64,
    pub approved: u64,
    pub rejected: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Approved and rejected per order kind of the mix.
    pub by_kind: BTreeMap<String, KindReport>,
    /// Happy orders rejected plus failing orders approved.
    pub unexpected_outcomes: u64,
    /// Orders placed whose outcome never arrived within the drain timeout.
    pub never_ended: u64,
    /// The first few of them, oldest first.
    pub never_ended_sample: Vec<NeverEnded>,
    pub duplicate_events: u64,
    pub unknown_events: u64,
    pub late_events: u64,
    /// Sagas ended per second, from the first outcome to the last: the
    /// throughput the system delivered.
    pub completed_per_s: f64,
    /// Outcomes received during the send window, per second of the window.
    pub completed_in_window_per_s: f64,
    /// From the end of sending until the last outcome (or the drain timeout).
    pub drain_seconds: f64,
    /// From the scheduled send time to the outcome event's arrival.
    pub latency: Summary,
    pub approved_latency: Summary,
    pub rejected_latency: Summary,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TargetCheck {
    pub name: String,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub label: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub config: RunConfig,
    pub machine: MachineInfo,
    pub send: SendReport,
    pub rpc: RpcReport,
    pub sagas: SagaReport,
    pub targets: Vec<TargetCheck>,
    /// CPU and memory of the watched processes during the send window.
    pub processes: Vec<GroupUsage>,
    pub machine_cpu: MachineUsage,
    pub timeline: Vec<TimelinePoint>,
}

/// Targets a run is checked against (none by default).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Targets {
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub completed_per_s: Option<f64>,
    /// Peak RSS of each watched group, except those in `rss_exempt`.
    pub rss_mb: Option<f64>,
    /// Groups the memory target does not apply to (the infrastructure).
    pub rss_exempt: Vec<String>,
}

impl Targets {
    /// The checks for `report`. Besides the given targets, a run always
    /// checks that every saga ended and, in open loop, that the generator
    /// kept the offered rate (otherwise the figures do not describe the rate
    /// asked for).
    pub fn check(&self, report: &Report) -> Vec<TargetCheck> {
        let mut checks = Vec::new();
        let mut add = |name: &str, target: String, measured: String, met: bool| {
            checks.push(TargetCheck {
                name: name.to_owned(),
                target,
                measured,
                met,
            });
        };
        let sagas = &report.sagas;
        if let Some(rate) = report.config.rate {
            add(
                "send rate kept",
                format!(">= {:.0}/s (99 %)", rate * 0.99),
                format!("{:.1}/s", report.send.achieved_rate),
                report.send.achieved_rate >= rate * 0.99,
            );
        }
        add(
            "every saga ended",
            "0 never ended".to_owned(),
            format!("{} never ended", sagas.never_ended),
            sagas.never_ended == 0 && report.send.sent > 0,
        );
        if let Some(rate) = self.completed_per_s {
            add(
                "completed sagas/s",
                format!(">= {rate:.0}/s"),
                format!("{:.1}/s", sagas.completed_per_s),
                sagas.completed_per_s >= rate && sagas.never_ended == 0,
            );
        }
        if let Some(p50) = self.p50_ms {
            add(
                "saga p50",
                format!("<= {p50} ms"),
                format!("{:.1} ms", sagas.latency.p50_ms),
                sagas.latency.count > 0 && sagas.latency.p50_ms <= p50,
            );
        }
        if let Some(p99) = self.p99_ms {
            add(
                "saga p99",
                format!("<= {p99} ms"),
                format!("{:.1} ms", sagas.latency.p99_ms),
                sagas.latency.count > 0 && sagas.latency.p99_ms <= p99,
            );
        }
        if let Some(limit) = self.rss_mb {
            let exempt = |name: &str| self.rss_exempt.iter().any(|e| e == name);
            for group in report.processes.iter().filter(|g| !exempt(&g.name)) {
                add(
                    &format!("peak RSS {}", group.name),
                    format!("< {limit} MB"),
                    format!("{:.1} MB", group.rss_peak_mb),
                    group.rss_peak_mb < limit,
                );
            }
        }
        checks
    }
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

fn summary_line(s: &Summary) -> String {
    format!(
        "p50 {}, p90 {}, p99 {}, p99.9 {}, max {} (n={})",
        ms(s.p50_ms),
        ms(s.p90_ms),
        ms(s.p99_ms),
        ms(s.p999_ms),
        ms(s.max_ms),
        s.count
    )
}

fn counts_line(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "none".to_owned();
    }
    counts
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub fn all_targets_met(&self) -> bool {
        self.targets.iter().all(|t| t.met)
    }

    /// CPU time per saga of a process using `cpu_pct` (percent of one core)
    /// during the send window: its CPU per second over the sagas ended per
    /// second of that window, in milliseconds. None when no saga ended in it.
    pub fn cpu_ms_per_saga(&self, cpu_pct: f64) -> Option<f64> {
        let rate = self.sagas.completed_in_window_per_s;
        (rate > 0.0).then(|| cpu_pct / 100.0 * 1000.0 / rate)
    }

    pub fn to_text(&self) -> String {
        let c = &self.config;
        let mut out = String::new();
        let load = match (c.rate, c.concurrency) {
            (Some(rate), _) => format!("open loop at {rate}/s"),
            (None, Some(n)) => format!("closed loop, concurrency {n}"),
            _ => c.mode.clone(),
        };
        let _ = writeln!(
            out,
            "== {}: {load} for {} s, mix {}, seed {} (run {}) ==",
            if self.label.is_empty() {
                "loadgen"
            } else {
                &self.label
            },
            c.duration_s,
            c.mix,
            c.seed,
            c.run_id
        );
        let m = &self.machine;
        let _ = writeln!(
            out,
            "started {}; machine: {} cores, {} MB memory ({} MB available), load average {} -> {}",
            self.started_at,
            m.nproc,
            m.mem_total_mb,
            m.mem_available_mb,
            m.load_average_start,
            m.load_average_end
        );
        let s = &self.send;
        let _ = writeln!(
            out,
            "sent {} of {} scheduled in {:.1} s: offered {:.1}/s, achieved {:.1}/s; send lag {}",
            s.sent,
            s.scheduled,
            s.send_seconds,
            s.offered_rate,
            s.achieved_rate,
            summary_line(&s.schedule_lag)
        );
        let r = &self.rpc;
        let _ = writeln!(
            out,
            "CreateOrder: {} ok, {} errors ({}); latency {}",
            r.ok,
            r.errors,
            counts_line(&r.errors_by_code),
            summary_line(&r.latency)
        );
        let g = &self.sagas;
        let _ = writeln!(
            out,
            "sagas: {} ended ({} approved, {} rejected), {} never ended; {:.1}/s first to last outcome, {:.1}/s within the send window; drain {:.1} s",
            g.completed,
            g.approved,
            g.rejected,
            g.never_ended,
            g.completed_per_s,
            g.completed_in_window_per_s,
            g.drain_seconds
        );
        let _ = writeln!(
            out,
            "rejected by reason: {}",
            counts_line(&g.rejected_by_reason)
        );
        for (kind, k) in &g.by_kind {
            let _ = writeln!(
                out,
                "  {kind}: {} approved, {} rejected ({})",
                k.approved,
                k.rejected,
                counts_line(&k.rejected_by_reason)
            );
        }
        let _ = writeln!(
            out,
            "unexpected outcomes {}, duplicate events {}, events of unknown orders {}, late events {}",
            g.unexpected_outcomes, g.duplicate_events, g.unknown_events, g.late_events
        );
        let _ = writeln!(out, "SAGA LATENCY: {}", summary_line(&g.latency));
        let _ = writeln!(out, "  approved: {}", summary_line(&g.approved_latency));
        let _ = writeln!(out, "  rejected: {}", summary_line(&g.rejected_latency));
        for n in &g.never_ended_sample {
            let _ = writeln!(
                out,
                "  never ended: {} ({}, scheduled at {:.3} s)",
                n.order_id, n.kind, n.scheduled_s
            );
        }
        if !self.processes.is_empty() {
            let mc = &self.machine_cpu;
            let _ = writeln!(
                out,
                "cpu during the send window (percent of one core; the machine has {} %): machine busy {:.0} % (peak second {:.0} %), iowait {:.0} %{}",
                mc.cores * 100,
                mc.busy_avg_pct,
                mc.busy_peak_pct,
                mc.iowait_avg_pct,
                per_saga_text(self.cpu_ms_per_saga(mc.busy_avg_pct))
            );
            for p in &self.processes {
                let _ = writeln!(
                    out,
                    "  {:<22} cpu {:>5.1} % (peak {:>5.1} %){}, hottest thread {} {:.1} %, peak rss {:.1} MB, pss {:.1} MB",
                    p.name,
                    p.cpu_avg_pct,
                    p.cpu_peak_pct,
                    per_saga_text(self.cpu_ms_per_saga(p.cpu_avg_pct)),
                    if p.hottest_thread.is_empty() {
                        "-"
                    } else {
                        &p.hottest_thread
                    },
                    p.hottest_thread_avg_pct,
                    p.rss_peak_mb,
                    p.pss_peak_mb
                );
            }
        }
        for t in &self.targets {
            let _ = writeln!(
                out,
                "target {}: {} {} (measured {})",
                if t.met { "met" } else { "MISSED" },
                t.name,
                t.target,
                t.measured
            );
        }
        out
    }
}

fn per_saga_text(ms: Option<f64>) -> String {
    ms.map(|ms| format!(", {ms:.2} ms per saga"))
        .unwrap_or_default()
}

fn per_saga_cell(ms: Option<f64>) -> String {
    ms.map(|ms| format!("{ms:.2} ms"))
        .unwrap_or_else(|| "-".to_owned())
}

/// Markdown tables comparing `reports` side by side (one column each), then
/// each run's processes.
pub fn markdown(reports: &[Report]) -> String {
    let mut out = String::new();
    if reports.is_empty() {
        return out;
    }
    let header: Vec<String> = reports
        .iter()
        .map(|r| {
            if r.label.is_empty() {
                r.config.run_id.clone()
            } else {
                r.label.clone()
            }
        })
        .collect();
    let _ = writeln!(out, "| | {} |", header.join(" | "));
    let _ = writeln!(out, "| --- |{}", " --- |".repeat(reports.len()));
    let row = |out: &mut String, name: &str, f: &dyn Fn(&Report) -> String| {
        let cells: Vec<String> = reports.iter().map(f).collect();
        let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
    };
    row(
        &mut out,
        "load",
        &|r| match (r.config.rate, r.config.concurrency) {
            (Some(rate), _) => format!("{rate}/s open loop, {} s", r.config.duration_s),
            (None, Some(n)) => format!("{n} in flight, closed loop, {} s", r.config.duration_s),
            _ => r.config.mode.clone(),
        },
    );
    row(&mut out, "started (UTC)", &|r| r.started_at.clone());
    row(&mut out, "load average start -> end", &|r| {
        format!(
            "{} -> {}",
            r.machine.load_average_start, r.machine.load_average_end
        )
    });
    row(&mut out, "sends scheduled / made", &|r| {
        format!("{} / {}", r.send.scheduled, r.send.sent)
    });
    row(&mut out, "offered / achieved send rate", &|r| {
        format!("{:.1} / {:.1}/s", r.send.offered_rate, r.send.achieved_rate)
    });
    row(&mut out, "send lag p99 / max", &|r| {
        format!(
            "{} / {}",
            ms(r.send.schedule_lag.p99_ms),
            ms(r.send.schedule_lag.max_ms)
        )
    });
    row(
        &mut out,
        "completed sagas/s (first to last outcome)",
        &|r| format!("{:.1}", r.sagas.completed_per_s),
    );
    row(&mut out, "outcomes/s within the send window", &|r| {
        format!("{:.1}", r.sagas.completed_in_window_per_s)
    });
    row(&mut out, "saga latency p50", &|r| {
        ms(r.sagas.latency.p50_ms)
    });
    row(&mut out, "saga latency p90", &|r| {
        ms(r.sagas.latency.p90_ms)
    });
    row(&mut out, "saga latency p99", &|r| {
        ms(r.sagas.latency.p99_ms)
    });
    row(&mut out, "saga latency max", &|r| {
        ms(r.sagas.latency.max_ms)
    });
    row(&mut out, "approved p50 / p99", &|r| {
        format!(
            "{} / {}",
            ms(r.sagas.approved_latency.p50_ms),
            ms(r.sagas.approved_latency.p99_ms)
        )
    });
    row(&mut out, "rejected p50 / p99", &|r| {
        format!(
            "{} / {}",
            ms(r.sagas.rejected_latency.p50_ms),
            ms(r.sagas.rejected_latency.p99_ms)
        )
    });
    row(&mut out, "CreateOrder p50 / p99", &|r| {
        format!(
            "{} / {}",
            ms(r.rpc.latency.p50_ms),
            ms(r.rpc.latency.p99_ms)
        )
    });
    row(&mut out, "approved / rejected / never ended", &|r| {
        format!(
            "{} / {} / {}",
            r.sagas.approved, r.sagas.rejected, r.sagas.never_ended
        )
    });
    row(&mut out, "rejected by reason", &|r| {
        counts_line(&r.sagas.rejected_by_reason)
    });
    row(&mut out, "unexpected outcomes", &|r| {
        r.sagas.unexpected_outcomes.to_string()
    });
    row(&mut out, "gRPC errors", &|r| {
        if r.rpc.errors == 0 {
            "0".to_owned()
        } else {
            format!("{} ({})", r.rpc.errors, counts_line(&r.rpc.errors_by_code))
        }
    });
    row(&mut out, "machine busy avg / peak (of 200 %)", &|r| {
        format!(
            "{:.0} % / {:.0} %",
            r.machine_cpu.busy_avg_pct, r.machine_cpu.busy_peak_pct
        )
    });
    row(&mut out, "targets", &|r| {
        let checks: Vec<String> = r
            .targets
            .iter()
            .filter(|t| !t.name.starts_with("peak RSS"))
            .map(|t| {
                format!(
                    "{} {} {}: {}",
                    if t.met { "met" } else { "**missed**" },
                    t.name,
                    t.target,
                    t.measured
                )
            })
            .collect();
        checks.join("; ")
    });

    for r in reports.iter().filter(|r| !r.processes.is_empty()) {
        let _ = writeln!(
            out,
            "\nProcesses during the send window of {} (CPU in percent of one core, \
             the busiest one-second interval in parentheses; RSS target < 100 MB per service):\n",
            if r.label.is_empty() {
                &r.config.run_id
            } else {
                &r.label
            }
        );
        let _ = writeln!(
            out,
            "| process | CPU avg (peak) | CPU per saga | hottest thread | peak RSS | peak PSS |"
        );
        let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- |");
        let _ = writeln!(
            out,
            "| whole machine | {:.1} % ({:.0} %) | {} | - | - | - |",
            r.machine_cpu.busy_avg_pct,
            r.machine_cpu.busy_peak_pct,
            per_saga_cell(r.cpu_ms_per_saga(r.machine_cpu.busy_avg_pct))
        );
        let mut processes = r.processes.clone();
        processes.sort_by(|a, b| b.cpu_avg_pct.total_cmp(&a.cpu_avg_pct));
        for p in &processes {
            let _ = writeln!(
                out,
                "| {} | {:.1} % ({:.0} %) | {} | {} {:.1} % | {:.1} MB | {:.1} MB |",
                p.name,
                p.cpu_avg_pct,
                p.cpu_peak_pct,
                per_saga_cell(r.cpu_ms_per_saga(p.cpu_avg_pct)),
                if p.hottest_thread.is_empty() {
                    "-".to_owned()
                } else {
                    format!("`{}`", p.hottest_thread)
                },
                p.hottest_thread_avg_pct,
                p.rss_peak_mb,
                p.pss_peak_mb
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            label: "50/s".into(),
            started_at: "2026-11-24T10:00:00Z".into(),
            config: RunConfig {
                mode: "open-loop".into(),
                rate: Some(50.0),
                duration_s: 60.0,
                mix: "happy=90,out_of_stock=10".into(),
                seed: 1,
                run_id: "r1".into(),
                ..RunConfig::default()
            },
            send: SendReport {
                scheduled: 3000,
                sent: 3000,
                offered_rate: 50.0,
                achieved_rate: 50.0,
                send_seconds: 60.0,
                schedule_lag: Summary::default(),
            },
            rpc: RpcReport {
                ok: 2999,
                errors: 1,
                errors_by_code: BTreeMap::from([("Unavailable".into(), 1)]),
                latency: Summary {
                    count: 3000,
                    p50_ms: 3.0,
                    p99_ms: 9.0,
                    ..Summary::default()
                },
            },
            sagas: SagaReport {
                completed: 2999,
                approved: 2700,
                rejected: 299,
                rejected_by_reason: BTreeMap::from([("reserve_stock: OUT_OF_STOCK".into(), 299)]),
                completed_per_s: 50.0,
                latency: Summary {
                    count: 2999,
                    p50_ms: 25.0,
                    p99_ms: 120.0,
                    ..Summary::default()
                },
                ..SagaReport::default()
            },
            processes: vec![
                GroupUsage {
                    name: "order-service".into(),
                    cpu_avg_pct: 12.5,
                    rss_peak_mb: 30.0,
                    pss_peak_mb: 20.0,
                    ..GroupUsage::default()
                },
                GroupUsage {
                    name: "postgres".into(),
                    cpu_avg_pct: 40.0,
                    rss_peak_mb: 2_000.0,
                    ..GroupUsage::default()
                },
            ],
            ..Report::default()
        }
    }

    #[test]
    fn the_json_report_carries_the_fields_the_benchmark_reads() {
        let report = report();
        let value: serde_json::Value = serde_json::from_str(&report.to_json()).expect("valid json");
        for pointer in [
            "/label",
            "/started_at",
            "/config/rate",
            "/config/mix",
            "/config/seed",
            "/send/offered_rate",
            "/send/achieved_rate",
            "/rpc/errors_by_code/Unavailable",
            "/rpc/latency/p99_ms",
            "/sagas/completed_per_s",
            "/sagas/completed_in_window_per_s",
            "/sagas/approved",
            "/sagas/rejected_by_reason/reserve_stock: OUT_OF_STOCK",
            "/sagas/never_ended",
            "/sagas/latency/p50_ms",
            "/sagas/latency/p90_ms",
            "/sagas/latency/p99_ms",
            "/sagas/latency/max_ms",
            "/processes/0/rss_peak_mb",
            "/processes/0/cpu_avg_pct",
            "/machine/nproc",
            "/machine_cpu/busy_avg_pct",
            "/timeline",
            "/targets",
        ] {
            assert!(value.pointer(pointer).is_some(), "{pointer} missing");
        }
        assert_eq!(value.pointer("/sagas/latency/p99_ms"), Some(&120.0.into()));
        let back: Report = serde_json::from_str(&report.to_json()).expect("round trip");
        assert_eq!(back, report);
    }

    #[test]
    fn targets_are_checked_against_the_measured_figures() {
        let report = report();
        let targets = Targets {
            p50_ms: Some(30.0),
            p99_ms: Some(100.0),
            completed_per_s: Some(50.0),
            rss_mb: Some(100.0),
            rss_exempt: vec!["postgres".into()],
        };
        let checks = targets.check(&report);
        let met = |name: &str| {
            checks
                .iter()
                .find(|c| c.name == name)
                .map(|c| c.met)
                .unwrap_or_else(|| panic!("no check {name}"))
        };
        assert!(met("send rate kept"));
        assert!(met("every saga ended"));
        assert!(met("completed sagas/s"));
        assert!(met("saga p50"));
        assert!(!met("saga p99"), "120 ms is over 100 ms");
        assert!(met("peak RSS order-service"));
        assert!(
            checks.iter().all(|c| c.name != "peak RSS postgres"),
            "exempt groups are not checked"
        );
    }

    #[test]
    fn a_saga_that_never_ended_fails_the_run_whatever_the_percentiles() {
        let mut report = report();
        report.sagas.never_ended = 1;
        let checks = Targets {
            completed_per_s: Some(10.0),
            ..Targets::default()
        }
        .check(&report);
        for name in ["every saga ended", "completed sagas/s"] {
            let check = checks.iter().find(|c| c.name == name).expect("checked");
            assert!(!check.met, "{name}");
        }
    }

    #[test]
    fn the_text_and_markdown_show_the_figures() {
        let mut report = report();
        report.targets = Targets {
            p99_ms: Some(100.0),
            ..Targets::default()
        }
        .check(&report);
        let text = report.to_text();
        assert!(text.contains("SAGA LATENCY: p50 25.0 ms"), "{text}");
        assert!(text.contains("Unavailable: 1"), "{text}");
        assert!(
            text.contains("target MISSED: saga p99 <= 100 ms (measured 120.0 ms)"),
            "{text}"
        );
        let md = markdown(&[report.clone(), report]);
        assert!(
            md.starts_with("| | 50/s | 50/s |\n| --- | --- | --- |\n"),
            "{md}"
        );
        assert!(
            md.contains("| saga latency p99 | 120 ms | 120 ms |"),
            "{md}"
        );
        assert!(md.contains("**missed** saga p99"), "{md}");
        assert!(
            md.contains("| order-service | 12.5 % (0 %) | - | - 0.0 % | 30.0 MB | 20.0 MB |"),
            "{md}"
        );
    }

    #[test]
    fn cpu_per_saga_is_the_cpu_per_second_over_the_sagas_ended_per_second_of_the_window() {
        let mut report = report();
        assert_eq!(
            report.cpu_ms_per_saga(40.0),
            None,
            "no saga ended in the window"
        );
        report.sagas.completed_in_window_per_s = 50.0;
        // 40 % of a core is 400 ms of CPU a second, shared by 50 sagas.
        assert_eq!(report.cpu_ms_per_saga(40.0), Some(8.0));
        report.machine_cpu.busy_avg_pct = 150.0;
        let text = report.to_text();
        assert!(
            text.contains("postgres               cpu  40.0 % (peak   0.0 %), 8.00 ms per saga"),
            "{text}"
        );
        assert!(text.contains("iowait 0 %, 30.00 ms per saga"), "{text}");
        let md = markdown(&[report]);
        assert!(md.contains("| postgres | 40.0 % (0 %) | 8.00 ms |"), "{md}");
        assert!(
            md.contains("| whole machine | 150.0 % (0 %) | 30.00 ms |"),
            "{md}"
        );
    }
}
