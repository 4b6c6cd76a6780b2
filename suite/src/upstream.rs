//! `[upstream]`: the round trip of a client's own message, client → server → client.
//! WebSocket sends it in band on the connection it listens on; the other techniques POST it on
//! a second connection and receive it on their subscription. One message is in flight at a
//! time: this measures a round trip, not a rate, so there is no schedule to fall behind.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use pushbench_loadgen::load::recorder::latency_histogram;
use pushbench_loadgen::load::report::Percentiles;
use pushbench_loadgen::{Client, ClientConfig, Counters, Item, Publisher, Target};
use pushbench_servers::Transport;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::SuiteError;

/// The techniques measured, in report order.
pub const MODES: [Transport; 4] = [
    Transport::Ws,
    Transport::Sse,
    Transport::LongPoll,
    Transport::Stream,
];

/// How long one round trip may take before it counts as lost.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(5);

/// Round trips before measuring.
const WARMUP: usize = 10;

/// Pause between round trips, so each one starts on a quiet connection.
const GAP: Duration = Duration::from_millis(2);

/// One technique's round trips.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Upstream {
    /// The subscription's technique.
    pub transport: Transport,
    /// `in-band` (WebSocket) or `POST`.
    pub via: String,
    /// Round trips measured.
    pub round_trips: u64,
    /// Messages that did not come back within 5 s.
    pub lost: u64,
    /// Send → receipt, µs.
    pub rtt_us: Percentiles,
}

/// Measures `n` round trips of `transport` against `url`.
pub async fn measure(url: &str, transport: Transport, n: usize) -> Result<Upstream, SuiteError> {
    let err =
        |e: &dyn std::fmt::Display| SuiteError::Upstream(format!("{}: {e}", transport.name()));
    let target = Target::resolve(url).await.map_err(|e| err(&e))?;
    let topic = format!("upstream-{}", transport.name());
    let counters = Counters::new_shared();
    let config = ClientConfig::new(transport, topic.clone());
    let mut client = Client::connect(&target, config, counters.clone())
        .await
        .map_err(|e| err(&e))?;
    let mut hist = latency_histogram();
    let mut lost = 0;
    if transport == Transport::Ws {
        for i in 0..WARMUP + n {
            let payload = format!("up {i}");
            let t0 = Instant::now();
            client.send_upstream(&payload).await.map_err(|e| err(&e))?;
            let got = tokio::time::timeout(ROUND_TRIP_TIMEOUT, async {
                loop {
                    match client.next().await {
                        Ok(Item::Event(d)) if d.payload == payload.as_bytes() => {
                            return Ok(d.received)
                        }
                        Ok(_) => {}
                        Err(e) => return Err(e),
                    }
                }
            })
            .await;
            record(&mut hist, &mut lost, i >= WARMUP, t0, got.ok()).map_err(|e| err(&e))?;
            tokio::time::sleep(GAP).await;
        }
    } else {
        // The subscription must be listening (a long poll already held) when the POST goes
        // out, as in an application, so it runs on its own task.
        let (tx, mut rx) = mpsc::channel(64);
        let reader = tokio::spawn(async move {
            while let Ok(item) = client.next().await {
                if let Item::Event(d) = item {
                    if tx.send((d.payload, d.received)).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut publisher = Publisher::connect(&target, counters)
            .await
            .map_err(|e| err(&e))?;
        for i in 0..WARMUP + n {
            let payload = format!("up {i}");
            let t0 = Instant::now();
            publisher
                .publish(&topic, payload.as_bytes())
                .await
                .map_err(|e| err(&e))?;
            let got = tokio::time::timeout(ROUND_TRIP_TIMEOUT, async {
                while let Some((p, received)) = rx.recv().await {
                    if p == payload.as_bytes() {
                        return Ok(received);
                    }
                }
                Err(pushbench_loadgen::ClientError::Closed)
            })
            .await;
            record(&mut hist, &mut lost, i >= WARMUP, t0, got.ok()).map_err(|e| err(&e))?;
            tokio::time::sleep(GAP).await;
        }
        reader.abort();
    }
    Ok(Upstream {
        transport,
        via: if transport == Transport::Ws {
            "in-band".into()
        } else {
            "POST".into()
        },
        round_trips: hist.len(),
        lost,
        rtt_us: Percentiles::of(&hist),
    })
}

/// Records one round trip (a timeout counts as lost; a client error ends the measurement).
fn record(
    hist: &mut Histogram<u64>,
    lost: &mut u64,
    measured: bool,
    t0: Instant,
    got: Option<Result<Instant, pushbench_loadgen::ClientError>>,
) -> Result<(), pushbench_loadgen::ClientError> {
    match got {
        Some(Ok(received)) => {
            if measured {
                let us = received.saturating_duration_since(t0).as_micros() as u64;
                hist.saturating_record(us.max(1));
            }
            Ok(())
        }
        Some(Err(e)) => Err(e),
        None => {
            *lost += u64::from(measured);
            Ok(())
        }
    }
}
