//! The live progress display: an indicatif bar on a terminal, or a plain
//! line every five seconds when the output is a log file.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::driver::Shared;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Bar,
    Log,
    Off,
}

impl Mode {
    pub fn from_arg(arg: &str) -> Self {
        match arg {
            "bar" => Mode::Bar,
            "log" => Mode::Log,
            "off" => Mode::Off,
            _ if std::io::stderr().is_terminal() => Mode::Bar,
            _ => Mode::Log,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    sent: u64,
    completed: u64,
    errors: u64,
    in_flight: usize,
}

fn counts(shared: &Shared) -> Counts {
    Counts {
        sent: shared.sent.load(Ordering::Relaxed),
        completed: shared.completed.load(Ordering::Relaxed),
        errors: shared.rpc_errors.load(Ordering::Relaxed),
        in_flight: shared.state().tracker.in_flight(),
    }
}

fn line(now: Counts, rate: f64, done_rate: f64) -> String {
    format!(
        "rate {rate:>6.1}/s  sent {:>7}  completed {:>7} ({done_rate:>6.1}/s)  in flight {:>6}  errors {}",
        now.sent, now.completed, now.in_flight, now.errors
    )
}

/// Shows progress until `done`; `send_for` is the length of the send phase.
pub async fn show(shared: Arc<Shared>, mode: Mode, send_for: Duration, done: CancellationToken) {
    if mode == Mode::Off {
        return;
    }
    let tick = match mode {
        Mode::Bar => Duration::from_millis(250),
        _ => Duration::from_secs(5),
    };
    let bar = (mode == Mode::Bar).then(|| {
        let tenths = (send_for.as_secs_f64() * 10.0).ceil() as u64;
        let bar = ProgressBar::with_draw_target(Some(tenths), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("[{elapsed_precise}] {bar:30.cyan/blue} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let mut previous = (shared.start.elapsed(), Counts::default());
    let mut interval = tokio::time::interval(tick);
    loop {
        tokio::select! {
            () = done.cancelled() => break,
            _ = interval.tick() => {}
        }
        let elapsed = shared.start.elapsed();
        let now = counts(&shared);
        let dt = elapsed.saturating_sub(previous.0).as_secs_f64().max(1e-3);
        let rate = (now.sent - previous.1.sent) as f64 / dt;
        let done_rate = (now.completed - previous.1.completed) as f64 / dt;
        previous = (elapsed, now);
        let text = line(now, rate, done_rate);
        match &bar {
            Some(bar) => {
                bar.set_position(((elapsed.min(send_for)).as_secs_f64() * 10.0) as u64);
                if elapsed >= send_for {
                    bar.set_message(format!("draining: {text}"));
                } else {
                    bar.set_message(text);
                }
            }
            None => eprintln!("[loadgen {:>6.1} s] {text}", elapsed.as_secs_f64()),
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}
