//! The production servers the suite measures beside pushbench's own (`--peers`), as one list.
//!
//! A peer is a start script (`scripts/NAME.sh start|stop`, which prints `listening on URL`,
//! `publish on URL` when publishes go elsewhere, and `pid PID` or `worker_pid PID`: the
//! process whose tree is sampled), the load generator's dialect for it
//! ([`pushbench_loadgen::Profile`]), and how to tell whether it is installed. Adding one is a
//! line in [`PEERS`]; its dialect, deploy folder, script and test are the other four places
//! (see `pushbench_loadgen::profile`). Its runs are `Server::Peer(profile)` in the summary,
//! written as the profile's name.

use std::path::Path;
use std::process::{Command, Stdio};

use pushbench_loadgen::Profile;

use crate::plot::Stroke;

/// One production server.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// How the load generator speaks to it; its name is the profile's.
    pub profile: Profile,
    /// How its lines are drawn, in each technique's colour.
    pub stroke: Stroke,
    /// Its start script, relative to the repository.
    pub script: &'static str,
    /// The environment variable naming the script's private prefix directory.
    pub prefix_env: &'static str,
    /// What to install when it is missing.
    pub install: &'static str,
    /// Commands and files that must exist for it to run.
    pub needs: &'static [Need],
    /// New subscriptions per second it accepts without refusing some (the suite's own ramp,
    /// 5,000/s, when `None`).
    pub connect_rate: Option<f64>,
}

/// Something a peer needs installed.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// A command on `PATH`.
    Command(&'static str),
    /// A file.
    File(&'static str),
}

/// Every peer, in the order reports list them.
pub const PEERS: [Peer; 2] = [
    Peer {
        profile: Profile::Nchan,
        stroke: Stroke::Dashed,
        script: "scripts/nchan.sh",
        prefix_env: "NCHAN_PREFIX",
        install: "apt-get install nginx-light libnginx-mod-nchan",
        needs: &[
            Need::Command("nginx"),
            Need::File("/usr/lib/nginx/modules/ngx_nchan_module.so"),
        ],
        connect_rate: None,
    },
    Peer {
        profile: Profile::Pushpin,
        stroke: Stroke::Dotted,
        script: "scripts/pushpin.sh",
        prefix_env: "PUSHPIN_PREFIX",
        install: "apt-get install pushpin",
        needs: &[
            Need::Command("pushpin"),
            Need::Command("condure"),
            Need::Command("zurl"),
        ],
        // Pushpin's proxy queues at most 100 requests for the origin (a fixed limit in
        // pushpin-proxy) and answers 502 past it: 1,000 subscriptions at 5,000/s had 350-560
        // of them refused. Batches of 50-100 are refused none.
        connect_rate: Some(500.0),
    },
];

impl Peer {
    /// The peer spoken to in `profile`, if it is one.
    pub fn of(profile: Profile) -> Option<&'static Peer> {
        PEERS.iter().find(|p| p.profile == profile)
    }

    /// The peer called `name` (`nchan`, `pushpin`).
    pub fn named(name: &str) -> Option<&'static Peer> {
        PEERS.iter().find(|p| p.profile.name() == name)
    }

    /// Whether it can run here: its script and everything it needs are there.
    pub fn available(&self, repo: &Path) -> bool {
        repo.join(self.script).exists()
            && self.needs.iter().all(|n| match n {
                Need::Command(c) => Command::new("sh")
                    .args(["-c", &format!("command -v {c}")])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success()),
                Need::File(f) => Path::new(f).exists(),
            })
    }
}

/// Parses `--peers`' list: `all`, or names separated by commas.
pub fn parse_list(text: &str) -> Result<Vec<Profile>, String> {
    if text == "all" {
        return Ok(PEERS.iter().map(|p| p.profile).collect());
    }
    text.split(',')
        .map(|name| {
            Peer::named(name.trim()).map(|p| p.profile).ok_or_else(|| {
                let names: Vec<_> = PEERS.iter().map(|p| p.profile.name()).collect();
                format!(
                    "unknown peer {name:?}; expected all, or some of {}",
                    names.join(", ")
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists() {
        assert_eq!(
            parse_list("all").unwrap(),
            [Profile::Nchan, Profile::Pushpin]
        );
        assert_eq!(parse_list("pushpin").unwrap(), [Profile::Pushpin]);
        assert_eq!(
            parse_list("nchan,pushpin").unwrap(),
            [Profile::Nchan, Profile::Pushpin]
        );
        assert!(parse_list("nginx").is_err());
        assert!(Peer::of(Profile::Pushbench).is_none());
    }
}
