//! Pushpin channel names: one per topic and technique, shared by the origin's hold
//! instructions and its publishes.

/// A technique's channel: each has its own bytes on the wire, so its own channel.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Channel {
    Stream,
    Sse,
    LongPoll,
    Ws,
}

/// The Pushpin channel of `topic` for one technique: `s:`, `e:`, `l:` or `w:` and the topic
/// (topics are `A-Z a-z 0-9 _ - . :`, which channel names allow).
pub(crate) fn channel(kind: Channel, topic: &str) -> String {
    let prefix = match kind {
        Channel::Stream => "s",
        Channel::Sse => "e",
        Channel::LongPoll => "l",
        Channel::Ws => "w",
    };
    format!("{prefix}:{topic}")
}
