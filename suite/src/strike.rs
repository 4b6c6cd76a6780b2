//! When and how a `[faults]` run's fault strikes: armed before the load run (stalled readers
//! connect first), struck at its time into the window while the load generator measures, read
//! back after it. *When* comes from the load run's own schedule ([`Timing`]); *how* is the
//! server's business: a signal for a mass drop, a kill and a fresh start for a restart.

use std::future::Future;
use std::time::{Duration, Instant};

use pushbench_loadgen::load::sampler::sample;
use pushbench_loadgen::load::Timing;
use pushbench_loadgen::Target;
use pushbench_servers::Transport;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::faults::{NewLife, ServerCounts, Struck};
use crate::plan::{Fault, FaultStep, Params};
use crate::server::ServerProcess;
use crate::stall::StalledReaders;

/// The `serve` options a fault's server needs: the stall runs' write timeout and send buffer.
pub fn server_args(fault: &FaultStep, params: &Params) -> Vec<String> {
    match fault.fault {
        Fault::Stall => vec![
            "--write-timeout".into(),
            format!("{}ms", params.faults_write_timeout.as_millis()),
            "--send-buffer".into(),
            params.faults_send_buffer.to_string(),
        ],
        _ => Vec::new(),
    }
}

/// A fault ready to strike during one load run.
#[derive(Debug)]
pub struct Armed {
    step: FaultStep,
    stalled: Option<StalledReaders>,
    counts_before: ServerCounts,
}

impl Armed {
    /// Readies `step` against `server`: a stall's readers connect and subscribe to `topic`
    /// now, before the load generator's subscribers.
    pub async fn new(
        step: &FaultStep,
        server: &ServerProcess,
        transport: Transport,
        topic: &str,
    ) -> Result<Armed, String> {
        let stalled = match step.fault {
            Fault::Stall => Some(
                StalledReaders::open(&server.url, transport, topic, step.stalled)
                    .await
                    .map_err(|e| e.to_string())?,
            ),
            _ => None,
        };
        Ok(Armed {
            step: step.clone(),
            stalled,
            counts_before: counts(&server.url).await,
        })
    }

    /// Runs `load` (which sends its [`Timing`] on `timing`'s other end) and strikes at the
    /// fault's time into its window. Gives back what `load` returned, the server (a new child
    /// after a restart) and what struck (`None` when the run ended before the fault's time).
    pub async fn during<T>(
        self,
        server: ServerProcess,
        timing: oneshot::Receiver<Timing>,
        load: impl Future<Output = T>,
    ) -> Result<(T, ServerProcess, Option<Struck>), String> {
        let done = CancellationToken::new();
        let Armed {
            step,
            stalled,
            counts_before,
        } = self;
        let strike = tokio::spawn(strike(
            step.clone(),
            server,
            stalled.as_ref().map(StalledReaders::stall_handle),
            timing,
            done.clone(),
        ));
        let out = load.await;
        done.cancel();
        let (server, struck) = strike.await.map_err(|e| format!("fault: {e}"))?;
        let stall = match stalled {
            Some(readers) => {
                let after = counts(&server.url).await;
                Some((readers.finish().await, after.since(counts_before)))
            }
            None => None,
        };
        let struck = match struck {
            Some(s) => Some(Struck {
                step,
                timing: s.timing,
                at: s.at,
                restart: s.restart?,
                new_life: s.new_life,
                stall,
            }),
            None => None,
        };
        Ok((out, server, struck))
    }
}

/// What the strike task saw.
struct Strike {
    timing: Timing,
    at: Instant,
    restart: Result<Option<Duration>, String>,
    new_life: Option<NewLife>,
}

/// How often a restarted server is sampled: the load generator's own beat.
const SAMPLE: Duration = Duration::from_millis(250);

async fn strike(
    step: FaultStep,
    mut server: ServerProcess,
    stall: Option<crate::stall::StallHandle>,
    timing: oneshot::Receiver<Timing>,
    done: CancellationToken,
) -> (ServerProcess, Option<Strike>) {
    let timing = tokio::select! {
        t = timing => match t {
            Ok(t) => t,
            Err(_) => return (server, None),
        },
        () = done.cancelled() => return (server, None),
    };
    let at = timing.window_start + step.at;
    if let Some(s) = &stall {
        // The readers stop reading on their own at `at`, without a wake-up of this task.
        s.stall_at(at);
    }
    tokio::select! {
        () = tokio::time::sleep_until(at.into()) => {}
        () = done.cancelled() => return (server, None),
    }
    let at = Instant::now();
    let restart = match step.fault {
        Fault::DropFixed | Fault::DropJitter => server.drop_all().map(|()| None),
        Fault::Restart => {
            // Blocking: the kill, the wait and the new child's first line.
            let joined = tokio::task::spawn_blocking(move || {
                let r = server.restart();
                (server, r)
            })
            .await;
            match joined {
                Ok((s, r)) => {
                    server = s;
                    r.map(Some)
                }
                Err(e) => panic_in_restart(e),
            }
        }
        Fault::Stall => Ok(None),
    }
    .map_err(|e| e.to_string());
    // The load generator samples the server it started with; a restarted server's new life is
    // sampled here, on the same 250 ms beat, until the run ends.
    let new_life = match (&restart, server.child_pid()) {
        (Ok(Some(_)), Some(pid)) => Some(sample_until(pid, &done).await),
        _ => None,
    };
    (
        server,
        Some(Strike {
            timing,
            at,
            restart,
            new_life,
        }),
    )
}

/// Samples process `pid` every 250 ms until `done`: its busiest interval's CPU (cores) and its
/// RSS peak.
async fn sample_until(pid: u32, done: &CancellationToken) -> NewLife {
    let first = sample(Some(pid));
    let mut life = NewLife {
        cpu_peak: None,
        rss_peak: first.map(|s| s.rss_bytes),
    };
    let mut last = first.map(|s| (Instant::now(), s.cpu));
    loop {
        tokio::select! {
            () = done.cancelled() => return life,
            () = tokio::time::sleep(SAMPLE) => {}
        }
        let Some(now) = sample(Some(pid)) else {
            return life;
        };
        let t = Instant::now();
        life.rss_peak = life.rss_peak.max(Some(now.rss_bytes));
        if let Some((t0, cpu0)) = last {
            let dt = t.duration_since(t0).as_secs_f64().max(1e-3);
            let cores = now.cpu.saturating_sub(cpu0).as_secs_f64() / dt;
            life.cpu_peak = Some(life.cpu_peak.map_or(cores, |p: f64| p.max(cores)));
        }
        last = Some((t, now.cpu));
    }
}

/// A restart whose blocking task panicked took the server with it: there is nothing to give
/// back, and the suite cannot go on without a server handle.
fn panic_in_restart(e: tokio::task::JoinError) -> ! {
    std::panic::resume_unwind(e.into_panic())
}

/// The server's counters a stall moves (zero where it has no `/stats`).
async fn counts(url: &str) -> ServerCounts {
    let Ok(target) = Target::resolve(url).await else {
        return ServerCounts::default();
    };
    match pushbench_loadgen::get(&target, "/stats").await {
        Ok((status, body)) if status.is_success() => serde_json::from_slice(&body)
            .map(|v| ServerCounts::parse(&v))
            .unwrap_or_default(),
        _ => ServerCounts::default(),
    }
}
