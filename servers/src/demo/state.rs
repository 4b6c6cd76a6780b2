//! What the demo's routes share with its publisher.

use tokio::sync::watch;

use super::settings::Settings;

/// The demo's own state, shared by its routes and its publisher.
#[derive(Debug)]
pub(crate) struct Demo {
    /// The current settings; the publisher follows changes.
    pub(super) settings: watch::Sender<Settings>,
}
