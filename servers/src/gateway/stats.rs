//! The gateway's own counters, beside the shared server counters of [`crate::stats`].

crate::stats::counters! {
    /// What the gateway did with devices and messages. `/stats` shows them under `gateway`;
    /// `/metrics` prefixes them `pushbench_gateway_`.
    GatewayStats, GatewaySnapshot, "pushbench_gateway_";
    /// Devices registered now.
    devices: "gauge",
    /// Devices with an open connection now.
    devices_online: "gauge",
    /// Registrations since start.
    registrations: "counter",
    /// Unregistrations since start.
    unregistrations: "counter",
    /// Topic subscriptions (device, topic) now.
    subscriptions: "gauge",
    /// Device groups now.
    groups: "gauge",
    /// Send requests accepted (validate_only included).
    sends: "counter",
    /// Send requests refused for the project's quota (429).
    quota_refusals: "counter",
    /// Recipients resolved for accepted sends: one per message per device.
    targeted: "counter",
    /// Messages held in device queues now, sent or not, until acknowledged.
    queued: "gauge",
    /// Frames written to devices, first sends and resends alike.
    delivered: "counter",
    /// Frames written again after a reconnect, because the device had not acknowledged them.
    resent: "counter",
    /// Frames the send path began to write to a device's socket and its session had to finish,
    /// because the socket was full.
    handbacks: "counter",
    /// Messages the devices acknowledged.
    acked: "counter",
    /// Acknowledgements for no message held (unknown, or repeated).
    unknown_acks: "counter",
    /// Messages whose TTL passed before they could be sent.
    expired: "counter",
    /// Unsent messages replaced by a newer one with the same collapse key.
    collapsed: "counter",
    /// Messages dropped from a full device queue (the oldest first).
    overflowed: "counter",
    /// Messages thrown away because their device unregistered.
    discarded: "counter",
    /// Upstream messages received from devices.
    upstream: "counter",
    /// Frames from devices refused: not JSON, neither an ack nor an upstream message, or an
    /// upstream message too large or without a message id.
    upstream_refused: "counter",
}

/// Subtracts `n` from a gauge.
pub(crate) fn sub(gauge: &std::sync::atomic::AtomicU64, n: u64) {
    // As `Stats::add`: subtracting nothing touches nothing.
    if n > 0 {
        gauge.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
    }
}
