//! One run, start to end: connect, optionally seed, position the outcome
//! consumer, start the /proc watcher, send (open or closed loop), wait for
//! the outstanding sagas (bounded), then build the report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use proto::order::v1::order_service_client::OrderServiceClient;
use tokio_util::sync::CancellationToken;

use crate::cli::RunArgs;
use crate::driver::{self, Shared};
use crate::procstat::{self, Accounting, Target};
use crate::progress;
use crate::report::{
    KindReport, MachineInfo, NeverEnded, Report, RpcReport, RunConfig, SagaReport, SendReport,
    Targets,
};
use crate::schedule::Schedule;
use crate::seed;

/// Longest run accepted: every load run is bounded.
const MAX_DURATION_S: f64 = 3600.0;

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn meminfo_mb(field: &str) -> u64 {
    read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

fn load_average() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn targets_of(args: &RunArgs) -> anyhow::Result<Vec<Target>> {
    let mut targets = vec![Target::Pid {
        name: "loadgen".to_owned(),
        pid: std::process::id(),
    }];
    for dir in &args.watch_pid_dir {
        targets.extend(
            procstat::pid_file_targets(dir)
                .with_context(|| format!("cannot read pid files in {}", dir.display()))?,
        );
    }
    for spec in &args.watch {
        let (name, pid) = spec
            .split_once('=')
            .with_context(|| format!("--watch {spec:?}: expected NAME=PID"))?;
        targets.push(Target::Pid {
            name: name.to_owned(),
            pid: pid
                .parse()
                .with_context(|| format!("--watch {spec:?}: bad pid"))?,
        });
    }
    for spec in &args.watch_comm {
        let (name, comm) = spec
            .split_once('=')
            .with_context(|| format!("--watch-comm {spec:?}: expected NAME=COMM"))?;
        targets.push(Target::Comm {
            name: name.to_owned(),
            comm: comm.to_owned(),
        });
    }
    // A later target of the same name replaces an earlier one (e.g. a broker
    // of the benchmark's own instead of the shared one of the pid directory).
    let mut unique: Vec<Target> = Vec::new();
    for target in targets {
        unique.retain(|t| t.name() != target.name());
        unique.push(target);
    }
    Ok(unique)
}

/// Samples (one a second) between two that also read the processes' PSS.
const PSS_EVERY: u64 = 10;

/// Samples `targets` once a second on its own thread until `stop`.
fn watch(
    targets: Vec<Target>,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Accounting> {
    std::thread::spawn(move || {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let mut accounting = Accounting::new(procstat::ticks_per_second(), cores);
        let mut next = Duration::ZERO;
        let mut taken = 0u64;
        loop {
            // PSS on the first sample and every PSS_EVERY-th after it: reading it
            // costs the sampled processes' kernel time (see `procstat::sample`).
            let with_pss = taken.is_multiple_of(PSS_EVERY);
            taken += 1;
            accounting.add(procstat::sample(&targets, with_pss, || start.elapsed()));
            // At least half a second between two samples, even after a slow one
            // (a PSS read on a loaded machine can take most of a second): the
            // processes are read one after another, so over a short interval
            // the gap between a process's two reads can differ from the
            // interval's length by more than the interval itself.
            next =
                (next + Duration::from_secs(1)).max(start.elapsed() + Duration::from_millis(500));
            while start.elapsed() < next {
                if stop.load(Ordering::Relaxed) {
                    // One last sample closes the interval.
                    accounting.add(procstat::sample(&targets, true, || start.elapsed()));
                    return accounting;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    })
}

pub async fn run(args: RunArgs) -> anyhow::Result<Report> {
    args.endpoints.check_loopback()?;
    anyhow::ensure!(
        args.duration > 0.0 && args.duration <= MAX_DURATION_S,
        "--duration must be between 0 and {MAX_DURATION_S} seconds"
    );
    anyhow::ensure!(
        args.drain_timeout >= 0.0 && args.drain_timeout <= MAX_DURATION_S,
        "--drain-timeout must be between 0 and {MAX_DURATION_S} seconds"
    );
    let duration = Duration::from_secs_f64(args.duration);
    let (mode, schedule) = match (args.rate, args.concurrency) {
        (Some(rate), _) => ("open-loop", Some(Schedule::new(rate, duration)?)),
        (None, Some(_)) => ("closed-loop", None),
        (None, None) => ("open-loop", Some(Schedule::new(50.0, duration)?)),
    };
    let rate = schedule.map(|s| s.rate());
    let run_id = format!("lg{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);

    if args.seed_data {
        let summary = seed::seed(&args.endpoints, &args.data, 16).await?;
        eprintln!("seeded: {summary}");
    }

    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        clients.push(OrderServiceClient::new(
            seed::connect(&args.endpoints.order_addr).await?,
        ));
    }
    let topic = args.endpoints.outcome_topic();
    let consumer = crate::outcomes::subscribe_at_end(&args.endpoints.kafka_brokers, &topic)?;
    let watch_targets = targets_of(&args)?;

    let machine_start = MachineInfo {
        nproc: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
        mem_total_mb: meminfo_mb("MemTotal"),
        mem_available_mb: meminfo_mb("MemAvailable"),
        load_average_start: load_average(),
        load_average_end: String::new(),
    };
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);

    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "interrupted: no more sends; waiting for outstanding sagas (again to quit)"
                );
                stop.cancel();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
    }

    // Give the consumer a moment to connect before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now() + Duration::from_millis(50);
    let shared = Arc::new(Shared::new(
        start,
        run_id.clone(),
        args.seed,
        args.mix.clone(),
        args.data.catalogue(),
        Duration::from_secs_f64(args.rpc_timeout.max(0.001)),
        stop.clone(),
    ));

    let consumer_stop = CancellationToken::new();
    let consumer_task = {
        let shared = shared.clone();
        let consumer_stop = consumer_stop.clone();
        tokio::spawn(async move {
            crate::outcomes::consume(consumer, consumer_stop, move |id, outcome| {
                shared.outcome(id, outcome);
            })
            .await
        })
    };
    let watch_stop = Arc::new(AtomicBool::new(false));
    let watcher = watch(watch_targets, start, watch_stop.clone());
    let progress_done = CancellationToken::new();
    let progress_task = tokio::spawn(progress::show(
        shared.clone(),
        progress::Mode::from_arg(&args.progress),
        duration,
        progress_done.clone(),
    ));

    tokio::time::sleep_until(start.into()).await;
    match (schedule, args.concurrency) {
        (Some(schedule), _) => {
            driver::open_loop(shared.clone(), clients, schedule, args.max_in_flight).await;
        }
        (None, concurrency) => {
            driver::closed_loop(shared.clone(), clients, concurrency.unwrap_or(1), duration).await;
        }
    }
    let send_end = shared.start.elapsed();
    watch_stop.store(true, Ordering::Relaxed);

    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain_timeout);
    while shared.state().tracker.in_flight() > 0 && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_end = shared.start.elapsed();
    shared.state().tracker.close();
    consumer_stop.cancel();
    progress_done.cancel();
    let _ = progress_task.await;
    let (_messages, _consumer_errors) = consumer_task.await.unwrap_or((0, 0));
    let accounting = watcher
        .join()
        .map_err(|_| anyhow::anyhow!("the /proc watcher panicked"))?;

    let state = shared.state();
    let tally = &state.tally;
    let never_ended = state.tracker.never_ended();
    let last_outcome = tally.last_received;
    let completed = tally.completed();
    let span = tally
        .first_received
        .map_or(Duration::ZERO, |first| last_outcome.saturating_sub(first));
    let window = duration.min(send_end.max(Duration::from_millis(1)));
    let in_window = tally.timeline.completed_before(window);
    let last_send = state.last_send.max(Duration::from_millis(1));
    let config = RunConfig {
        mode: mode.to_owned(),
        rate,
        concurrency: if rate.is_none() {
            args.concurrency
        } else {
            None
        },
        duration_s: args.duration,
        mix: args.mix.to_string(),
        seed: args.seed,
        run_id,
        order_addr: args.endpoints.order_addr.clone(),
        kafka_brokers: args.endpoints.kafka_brokers.clone(),
        outcome_topic: topic,
        connections: args.connections.max(1),
        drain_timeout_s: args.drain_timeout,
        products: args.data.products,
        customers: args.data.customers,
    };
    let by_kind: BTreeMap<String, KindReport> = tally
        .by_kind
        .iter()
        .map(|(kind, counts)| {
            (
                kind.to_string(),
                KindReport {
                    approved: counts.approved,
                    rejected: counts.rejected,
                    rejected_by_reason: counts.rejected_by_reason.clone(),
                },
            )
        })
        .collect();
    let sent = shared.sent.load(Ordering::Relaxed);
    let mut report = Report {
        label: args.label.clone(),
        started_at,
        config,
        machine: MachineInfo {
            load_average_end: load_average(),
            ..machine_start
        },
        send: SendReport {
            scheduled: schedule.map_or(state.scheduled, |s| s.count()),
            sent,
            offered_rate: schedule.map_or(sent as f64 / duration.as_secs_f64(), |s| {
                s.count() as f64 / duration.as_secs_f64()
            }),
            // The n-th send of a schedule leaves at (n-1)/rate: count the
            // intervals, not the sends, for an open loop that kept up.
            achieved_rate: if rate.is_some() && sent > 1 {
                (sent - 1) as f64 / last_send.as_secs_f64()
            } else {
                sent as f64 / send_end.as_secs_f64().max(1e-3)
            },
            send_seconds: send_end.as_secs_f64(),
            schedule_lag: state.schedule_lag.summary(),
        },
        rpc: RpcReport {
            ok: shared.rpc_ok.load(Ordering::Relaxed),
            errors: shared.rpc_errors.load(Ordering::Relaxed),
            errors_by_code: state.errors_by_code.clone(),
            latency: state.rpc_latency.summary(),
        },
        sagas: SagaReport {
            completed,
            approved: tally.approved(),
            rejected: tally.rejected(),
            rejected_by_reason: tally.rejected_by_reason(),
            by_kind,
            unexpected_outcomes: tally.unexpected,
            never_ended: never_ended.len() as u64,
            never_ended_sample: never_ended
                .iter()
                .take(10)
                .map(|(id, kind, scheduled)| NeverEnded {
                    order_id: id.clone(),
                    kind: kind.to_string(),
                    scheduled_s: scheduled.as_secs_f64(),
                })
                .collect(),
            duplicate_events: state.tracker.duplicates(),
            unknown_events: state.tracker.unknown(),
            late_events: state.tracker.late(),
            completed_per_s: if completed > 1 && !span.is_zero() {
                (completed - 1) as f64 / span.as_secs_f64()
            } else {
                completed as f64
            },
            completed_in_window_per_s: in_window as f64 / window.as_secs_f64(),
            drain_seconds: if never_ended.is_empty() {
                last_outcome.saturating_sub(send_end).as_secs_f64()
            } else {
                drain_end.saturating_sub(send_end).as_secs_f64()
            },
            latency: tally.latency.summary(),
            approved_latency: tally.approved_latency.summary(),
            rejected_latency: tally.rejected_latency.summary(),
        },
        targets: Vec::new(),
        processes: accounting.groups(),
        machine_cpu: accounting.machine(),
        timeline: tally.timeline.points(),
    };
    drop(state);
    report.targets = Targets {
        p50_ms: args.target_p50_ms,
        p99_ms: args.target_p99_ms,
        completed_per_s: args.target_rate,
        rss_mb: args.target_rss_mb,
        rss_exempt: args.rss_exempt.clone(),
    }
    .check(&report);
    Ok(report)
}

/// Writes the JSON and the plot if asked for.
pub fn write_outputs(args: &RunArgs, report: &Report) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    if let Some(path) = &args.json {
        write_file(path, report.to_json().as_bytes())?;
        notes.push(format!("report written to {}", path.display()));
    }
    if let Some(path) = &args.plot {
        let labels = crate::plot::load_font(args.plot_font.as_deref());
        let title = format!(
            "{} saga latency per second, p50 and p99",
            if report.label.is_empty() {
                &report.config.run_id
            } else {
                &report.label
            }
        );
        let drawn = crate::plot::draw(path, &title, &report.timeline, labels)?;
        notes.push(format!(
            "plot written to {} ({} seconds{})",
            path.display(),
            drawn.points,
            if drawn.labels {
                ""
            } else {
                ", no font found: drawn without text"
            }
        ));
    }
    Ok(notes)
}

fn write_file(path: &PathBuf, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}
