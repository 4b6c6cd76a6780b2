//! Registration tokens and device groups' notification keys: how they are made, and how a
//! well-formed one is told from a malformed one.
//!
//! Why tell them apart: FCM answers a send to a string that cannot be a registration token
//! with 400 `INVALID_ARGUMENT`, and keeps 404 `UNREGISTERED` for a well-formed token that is not
//! (or no longer) registered. The app server learns which to do: fix its code, or forget the
//! token.

use base64::Engine as _;

use super::error::FcmError;

/// What a registration token starts with, before its random part.
const TOKEN_PREFIX: &str = "pb:";
/// Random bytes in a registration token.
const TOKEN_BYTES: usize = 24;
/// What a device group's notification key starts with (FCM's keys start so too).
const KEY_PREFIX: &str = "APA91";
/// Random bytes in a notification key.
const KEY_BYTES: usize = 48;

/// A new registration token.
pub(super) fn new_token() -> Result<String, FcmError> {
    random_id(TOKEN_PREFIX, TOKEN_BYTES)
}

/// A new notification key.
pub(super) fn new_group_key() -> Result<String, FcmError> {
    random_id(KEY_PREFIX, KEY_BYTES)
}

/// `bytes` unguessable random bytes as URL-safe base64, prefixed: tokens and keys are their
/// holder's only credential.
fn random_id(prefix: &str, bytes: usize) -> Result<String, FcmError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| FcmError::Unavailable(format!("no randomness for a new id: {e}")))?;
    Ok(format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
    ))
}

/// Whether `s` has the shape of a registration token or a notification key made here.
pub(super) fn well_formed(s: &str) -> bool {
    let shaped = |prefix: &str, bytes: usize| {
        s.strip_prefix(prefix).is_some_and(|rest| {
            rest.len() == (bytes * 4).div_ceil(3)
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    };
    shaped(TOKEN_PREFIX, TOKEN_BYTES) || shaped(KEY_PREFIX, KEY_BYTES)
}

/// Refuses a string that cannot be a registration token (or notification key), as FCM does.
pub(super) fn check(s: &str) -> Result<(), FcmError> {
    if well_formed(s) {
        return Ok(());
    }
    Err(FcmError::InvalidArgument(
        "The registration token is not a valid FCM registration token".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_tokens_and_keys_are_well_formed_and_others_are_not() {
        let token = new_token().unwrap();
        let key = new_group_key().unwrap();
        assert!(well_formed(&token) && well_formed(&key), "{token} {key}");
        assert!(check(&token).is_ok());
        let mut bad = vec![
            String::new(),
            "pb:".into(),
            "pb:nobody".into(),
            format!("{token}x"),
            token[..token.len() - 1].to_owned(),
            token.replacen("pb:", "pc:", 1),
            format!("{}+", &token[..token.len() - 1]),
            key.replacen("APA91", "APA92", 1),
        ];
        bad.push(format!("{} ", &key[..key.len() - 1]));
        for s in &bad {
            assert!(!well_formed(s), "{s:?}");
            let e = check(s).unwrap_err();
            assert!(matches!(e, FcmError::InvalidArgument(_)), "{s:?}: {e:?}");
        }
    }
}
