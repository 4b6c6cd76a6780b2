//! Topic names as FCM accepts them, shared by the send request, the condition language and the
//! registry.

use std::sync::Arc;

/// A topic name without its `/topics/` prefix.
pub type TopicName = Arc<str>;

/// Longest topic name accepted.
const MAX_TOPIC_LEN: usize = 900;

/// Checks a topic name (FCM's pattern `[a-zA-Z0-9-_.~%]+`), accepting a `/topics/` prefix.
pub fn normalize_topic(name: &str) -> Result<TopicName, String> {
    let bare = name.strip_prefix("/topics/").unwrap_or(name);
    let ok = !bare.is_empty()
        && bare.len() <= MAX_TOPIC_LEN
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b));
    if !ok {
        return Err(format!(
            "Invalid topic name {name:?}: 1 to {MAX_TOPIC_LEN} of [a-zA-Z0-9-_.~%]"
        ));
    }
    Ok(bare.into())
}
