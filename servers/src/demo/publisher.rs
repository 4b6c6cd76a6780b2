//! The demo's built-in publisher: one event on the demo topic every `1/rate` seconds, each
//! carrying its publish time so the page can show delivery latency.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;

use super::settings::Settings;

/// Publishes to `topic` at the rate in `settings` (following its changes) until `shutdown`.
pub(crate) async fn run(
    hub: Hub,
    topic: &str,
    mut settings: watch::Receiver<Settings>,
    shutdown: CancellationToken,
) {
    let mut current = *settings.borrow_and_update();
    let mut ticker = schedule(current.rate());
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = settings.changed() => {
                if changed.is_err() {
                    return;
                }
                let next = *settings.borrow_and_update();
                if next.rate() != current.rate() {
                    ticker = schedule(next.rate());
                }
                current = next;
            }
            () = tick(&mut ticker) => {
                let payload = payload(now_ms(), current.payload_bytes());
                if let Err(err) = hub.publish(topic, payload.as_bytes()) {
                    tracing::warn!(%err, "demo publish failed");
                }
            }
        }
    }
}

/// A ticker for `rate` events per second, first tick one period from now; none when paused.
fn schedule(rate: f64) -> Option<Interval> {
    if rate <= 0.0 {
        return None;
    }
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    // After a stall, go on at the set rate rather than publishing a burst.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    Some(ticker)
}

async fn tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Milliseconds since the Unix epoch: what the page's `Date.now()` counts, so on one machine
/// the difference is the delivery latency.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `{"sent":MS,"pad":"xx…"}`, padded to `size` bytes (or as short as the envelope allows).
pub(crate) fn payload(sent_ms: u64, size: usize) -> String {
    let mut out = format!("{{\"sent\":{sent_ms},\"pad\":\"");
    let pad = size.saturating_sub(out.len() + 2);
    out.extend(std::iter::repeat_n('x', pad));
    out.push_str("\"}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Cursor;

    #[test]
    fn payload_has_the_size_asked_and_parses() {
        let ms = 1_764_115_200_123;
        for size in [32, 64, 1000] {
            let p = payload(ms, size);
            assert_eq!(p.len(), size);
            let v: serde_json::Value = serde_json::from_str(&p).unwrap();
            assert_eq!(v["sent"], ms);
        }
        // Smaller than the envelope: no padding, still valid.
        let p = payload(ms, 1);
        assert_eq!(p, format!("{{\"sent\":{ms},\"pad\":\"\"}}"));
    }

    #[tokio::test(start_paused = true)]
    async fn publishes_at_the_set_rate_and_follows_changes() {
        let hub = Hub::new(Default::default());
        let (tx, rx) = watch::channel(Settings::new(10.0, 64, 1000).unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(hub.clone(), "t", rx, shutdown.clone()));
        let last = |hub: &Hub| hub.read("t", None, 0).unwrap().last_id;

        tokio::time::sleep(Duration::from_millis(1050)).await;
        assert_eq!(last(&hub), 10);
        let batch = hub.read("t", Some(Cursor::bare(9)), 1).unwrap();
        assert_eq!(batch.events[0].payload_len(), 64);

        tx.send(Settings::new(0.0, 64, 1000).unwrap()).unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(last(&hub), 10, "paused");

        tx.send(Settings::new(2.0, 128, 1000).unwrap()).unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(last(&hub), 12);
        assert_eq!(
            hub.read("t", Some(Cursor::bare(11)), 1).unwrap().events[0].payload_len(),
            128
        );

        shutdown.cancel();
        task.await.unwrap();
    }
}
