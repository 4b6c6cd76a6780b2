//! Target profiles: which server's dialect the clients and the publisher speak.
//!
//! `pushbench` is docs/PROTOCOL.md. `nchan` maps the same five techniques onto Nchan, the nginx
//! pub/sub module, so one load generator measures a production push server beside ours.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A server dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// pushbench's own protocol (docs/PROTOCOL.md).
    #[default]
    Pushbench,
    /// Nchan, with the locations of `deploy/nchan/nginx.conf`.
    Nchan,
}

impl Profile {
    /// The name on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Pushbench => "pushbench",
            Profile::Nchan => "nchan",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pushbench" => Ok(Profile::Pushbench),
            "nchan" => Ok(Profile::Nchan),
            other => Err(format!(
                "unknown target profile {other:?} (expected pushbench or nchan)"
            )),
        }
    }
}
