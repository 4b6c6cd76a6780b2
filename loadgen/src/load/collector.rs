//! The collector's state: live counts, interval histograms, the `/proc` time series and peaks,
//! and the workers' merged totals.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::handles::WorkerHandle;
use super::recorder::{latency_histogram, Recorder};
use super::report::Sample;
use super::sampler::{sample, sample_tree, ProcSample};
use super::schedule::Clock;
use super::worker::{self, Control, WorkerMsg};
use crate::counters::CountersSnapshot;

/// How often the collector samples `/proc` and refreshes the progress line.
pub(super) const TICK: Duration = Duration::from_millis(250);

/// Readings taken at the window's edges, to charge CPU to the window alone.
#[derive(Debug, Clone)]
pub(super) struct Marks {
    pub(super) at: Instant,
    pub(super) server: Option<ProcSample>,
    pub(super) loadgen: Option<ProcSample>,
    /// The machine's steal so far, and its CPU count ([`super::sampler::steal`]).
    pub(super) steal: Option<(Duration, usize)>,
}

/// What the workers reported, merged.
#[derive(Debug, Default)]
pub(super) struct Totals {
    pub(super) recorder: Recorder,
    pub(super) window: CountersSnapshot,
    pub(super) total: CountersSnapshot,
    /// CPU of the subscribers' worker threads over the window, summed.
    pub(super) subscriber_cpu: Duration,
}

/// Time series, interval histograms, live counts and peaks, gathered on the collector's tick.
#[derive(Debug)]
pub(super) struct Collector {
    pub(super) server_pid: Option<u32>,
    /// Worker processes, whose CPU and memory count as the load generator's.
    pub(super) child_pids: Vec<u32>,
    pub(super) run_start: Instant,
    pub(super) last: (Instant, Option<ProcSample>, Option<ProcSample>),
    pub(super) series: Vec<Sample>,
    /// Latest (delivered, connected) of each worker.
    /// Per worker: first deliveries, subscribers connected, reconnects.
    pub(super) progress: Vec<(u64, u64, u64)>,
    /// Interval histograms merged across workers, per collector second.
    pub(super) current: Histogram<u64>,
    pub(super) current_start: Instant,
    pub(super) intervals: Vec<(Duration, Duration, Histogram<u64>)>,
    /// The last interval's p99, ms: taken once per interval, not on every tick that shows it
    /// (a quantile walks the whole histogram).
    last_p99_ms: Option<f64>,
    pub(super) server_rss_peak: Option<u64>,
    pub(super) loadgen_rss_peak: u64,
    pub(super) done: usize,
    pub(super) totals: Totals,
}

impl Collector {
    pub(super) fn new(server_pid: Option<u32>, run_start: Instant) -> Collector {
        Collector {
            server_pid,
            child_pids: Vec::new(),
            run_start,
            last: (run_start, sample_tree(server_pid), sample(None)),
            series: Vec::new(),
            progress: Vec::new(),
            current: latency_histogram(),
            current_start: run_start,
            intervals: Vec::new(),
            last_p99_ms: None,
            server_rss_peak: None,
            loadgen_rss_peak: 0,
            done: 0,
            totals: Totals::default(),
        }
    }

    pub(super) fn workers(&mut self, n: usize, child_pids: Vec<u32>) {
        self.progress = vec![(0, 0, 0); n];
        self.child_pids = child_pids;
        self.last.2 = self.loadgen_sample();
    }

    pub(super) fn delivered(&self) -> u64 {
        self.progress.iter().map(|p| p.0).sum()
    }

    pub(super) fn connected(&self) -> u64 {
        self.progress.iter().map(|p| p.1).sum()
    }

    /// Subscribers' reconnects so far.
    fn reconnects(&self) -> u64 {
        self.progress.iter().map(|p| p.2).sum()
    }

    /// This process plus its worker processes.
    pub(super) fn loadgen_sample(&self) -> Option<ProcSample> {
        let mut total = sample(None)?;
        for pid in &self.child_pids {
            if let Some(s) = sample(Some(*pid)) {
                total.cpu += s.cpu;
                total.rss_bytes += s.rss_bytes;
            }
        }
        Some(total)
    }

    pub(super) fn marks(&self, at: Instant) -> Marks {
        Marks {
            at,
            server: sample_tree(self.server_pid),
            loadgen: self.loadgen_sample(),
            steal: super::sampler::steal(),
        }
    }

    pub(super) fn absorb(&mut self, msg: WorkerMsg) {
        match msg {
            WorkerMsg::Interval { histogram, .. } => {
                let _ = self.current.add(&histogram);
                let now = Instant::now();
                if now.duration_since(self.current_start) >= worker::INTERVAL {
                    let start = self.current_start.duration_since(self.run_start);
                    let length = now.duration_since(self.current_start);
                    let h = std::mem::replace(&mut self.current, latency_histogram());
                    self.last_p99_ms =
                        (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1000.0);
                    self.intervals.push((start, length, h));
                    self.current_start = now;
                }
            }
            WorkerMsg::Progress {
                worker,
                delivered,
                connected,
                reconnects,
            } => {
                if let Some(p) = self.progress.get_mut(worker) {
                    *p = (delivered, connected, reconnects);
                }
            }
            WorkerMsg::Done {
                worker,
                recorder,
                window,
                total,
                window_cpu_ns,
            } => {
                self.totals.subscriber_cpu += Duration::from_nanos(window_cpu_ns);
                if let Some(p) = self.progress.get_mut(worker) {
                    p.0 = recorder.delivered;
                    p.1 = recorder.clients_connected;
                }
                self.totals.recorder.merge(&recorder);
                self.totals.window.merge(&window);
                self.totals.total.merge(&total);
                self.done += 1;
            }
            WorkerMsg::Subscribed { worker, connected } => {
                // Counted here too: the next progress message may be a tick away.
                if let Some(p) = self.progress.get_mut(worker) {
                    p.1 = p.1.max(connected);
                }
            }
        }
    }

    pub(super) fn last_p99_ms(&self) -> Option<f64> {
        self.last_p99_ms
    }

    /// Takes a sample of the time series, at most every [`TICK`].
    pub(super) fn sample(&mut self, phase: &str, published: u64) {
        let now = Instant::now();
        if !self.series.is_empty() && now.duration_since(self.last.0) < TICK {
            return;
        }
        let server = sample_tree(self.server_pid);
        let me = self.loadgen_sample();
        let dt = now.duration_since(self.last.0).as_secs_f64().max(1e-3);
        let cores = |a: Option<ProcSample>, b: Option<ProcSample>| match (a, b) {
            (Some(a), Some(b)) => Some(b.cpu.saturating_sub(a.cpu).as_secs_f64() / dt),
            _ => None,
        };
        if let Some(s) = server {
            self.server_rss_peak = Some(self.server_rss_peak.unwrap_or(0).max(s.rss_bytes));
        }
        let me_rss = me.map_or(0, |s| s.rss_bytes);
        self.loadgen_rss_peak = self.loadgen_rss_peak.max(me_rss);
        self.series.push(Sample {
            t_s: now.duration_since(self.run_start).as_secs_f64(),
            phase: phase.to_owned(),
            published,
            delivered: self.delivered(),
            connected: self.connected(),
            reconnects: self.reconnects(),
            server_cpu_cores: cores(self.last.1, server),
            server_rss_bytes: server.map(|s| s.rss_bytes),
            loadgen_cpu_cores: cores(self.last.2, me).unwrap_or(0.0),
            loadgen_rss_bytes: me_rss,
        });
        self.last = (now, server, me);
    }

    /// Tells every worker to stop, waits for their totals, and merges them.
    pub(super) fn finish(
        &mut self,
        rx: &mpsc::Receiver<WorkerMsg>,
        mut workers: Vec<WorkerHandle>,
        clock: Clock,
    ) -> Totals {
        for w in &mut workers {
            w.control(Control::Stop, &clock);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.done < workers.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(msg) => self.absorb(msg),
                Err(_) => break,
            }
        }
        for w in workers {
            w.finish();
        }
        std::mem::take(&mut self.totals)
    }
}
