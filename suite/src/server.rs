//! The servers under test, each its own child process pinned to the server core: a fresh
//! `pushbench serve TRANSPORT` per load run (so memory and CPU are that run's alone), or a peer
//! through its script (`scripts/nchan.sh`, `scripts/pushpin.sh`) for `--peers`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pushbench_servers::Transport;

use crate::peer::Peer;
use crate::pin::Pinning;
use crate::SuiteError;

/// How long a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a server gets to stop on SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running server.
#[derive(Debug)]
pub struct ServerProcess {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Where publishes go when not to `url` (Pushpin's origin).
    pub publish_url: Option<String>,
    /// The process whose tree to sample (Nchan: its one worker; Pushpin: its runner), when
    /// known.
    pub pid: Option<u32>,
    /// The gateway's: the bearer token app servers must send.
    pub auth_token: Option<String>,
    /// The gateway's: the bearer token devices must send to register.
    pub registration_token: Option<String>,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Pushbench {
        child: Child,
        spawn: Spawn,
    },
    Peer {
        script: PathBuf,
        prefix_env: &'static str,
        prefix: PathBuf,
    },
}

/// How a pushbench server was started, to start it again the same way (`[faults]` restart).
#[derive(Debug, Clone)]
struct Spawn {
    exe: PathBuf,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    pinning: Pinning,
}

impl Spawn {
    /// Starts the server on `addr` and waits for its `listening on` line.
    fn start(&self, addr: &str) -> Result<(Child, String), SuiteError> {
        let what = self.args.first().map_or("", String::as_str);
        let mut cmd = self.pinning.server_command(&self.exe);
        cmd.arg("serve")
            .args(&self.args)
            .args(["--addr", addr])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .map_err(|e| SuiteError::Server(format!("starting {}: {e}", self.exe.display())))?;
        let url = child
            .stdout
            .take()
            .and_then(|stdout| first_line(stdout, START_TIMEOUT))
            .and_then(|line| line.strip_prefix("listening on ").map(str::to_owned));
        match url {
            Some(url) => Ok((child, url)),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(SuiteError::Server(format!(
                    "`pushbench serve {what}` did not print its address within {START_TIMEOUT:?}"
                )))
            }
        }
    }
}

impl ServerProcess {
    /// Starts `exe serve TRANSPORT --addr 127.0.0.1:0 --threads 1` on the server core and waits
    /// for its `listening on` line.
    pub fn pushbench(
        exe: &Path,
        transport: Transport,
        pinning: &Pinning,
    ) -> Result<ServerProcess, SuiteError> {
        Self::serve(exe, transport.name(), &[], pinning)
    }

    /// [`ServerProcess::pushbench`] with more options of `serve` (`[faults]`' stall runs set
    /// the write timeout and send buffer).
    pub fn pushbench_with(
        exe: &Path,
        transport: Transport,
        extra: &[String],
        pinning: &Pinning,
    ) -> Result<ServerProcess, SuiteError> {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        Self::serve(exe, transport.name(), &extra, pinning)
    }

    /// Starts the FCM-style gateway (`exe serve gateway`) the same way, with bearer tokens of
    /// its own for app servers and for registering devices ([`ServerProcess::auth_token`],
    /// [`ServerProcess::registration_token`]). Its quota is off: the suite measures delivery,
    /// not the quota.
    pub fn gateway(exe: &Path, pinning: &Pinning) -> Result<ServerProcess, SuiteError> {
        Self::serve(exe, "gateway", &["--quota-per-minute", "0"], pinning)
    }

    fn serve(
        exe: &Path,
        what: &str,
        extra: &[&str],
        pinning: &Pinning,
    ) -> Result<ServerProcess, SuiteError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let token = |kind: &str| format!("suite-{kind}-{}-{nanos}", std::process::id());
        let gateway = what == "gateway";
        let auth_token = gateway.then(|| token("send"));
        let registration_token = gateway.then(|| token("register"));
        // The tokens travel in the environment, not on a command line anyone can read.
        let env = [
            ("PUSHBENCH_AUTH_TOKEN", &auth_token),
            ("PUSHBENCH_REGISTRATION_TOKEN", &registration_token),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.clone()?)))
        .collect();
        let mut args = vec![what.to_owned(), "--threads".into(), "1".into()];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let spawn = Spawn {
            exe: exe.to_owned(),
            args,
            env,
            pinning: pinning.clone(),
        };
        let (child, url) = spawn.start("127.0.0.1:0")?;
        Ok(ServerProcess {
            url,
            publish_url: None,
            // The load generator finds a pushbench server's pid through `/stats`.
            pid: None,
            kind: Kind::Pushbench { child, spawn },
            auth_token,
            registration_token,
        })
    }

    /// A pushbench server's process id.
    pub fn child_pid(&self) -> Option<u32> {
        match &self.kind {
            Kind::Pushbench { child, .. } => Some(child.id()),
            Kind::Peer { .. } => None,
        }
    }

    /// Cuts every connection of a pushbench server at once (`serve` answers SIGUSR1 with a
    /// drop-all), leaving it serving.
    pub fn drop_all(&self) -> Result<(), SuiteError> {
        let pid = self
            .child_pid()
            .ok_or_else(|| SuiteError::Server("only a pushbench server drops on signal".into()))?;
        signal(pid, nix::sys::signal::Signal::SIGUSR1)
    }

    /// Kills a pushbench server (SIGKILL: no goodbye to any client) and starts it again on the
    /// same address, as a crashed service is restarted by its supervisor. Returns how long it
    /// was gone: from the kill to the new life's `listening on` line.
    pub fn restart(&mut self) -> Result<Duration, SuiteError> {
        let Kind::Pushbench { child, spawn } = &mut self.kind else {
            return Err(SuiteError::Server(
                "only a pushbench server restarts".into(),
            ));
        };
        let addr = self
            .url
            .strip_prefix("http://")
            .unwrap_or(&self.url)
            .to_owned();
        let t0 = Instant::now();
        let _ = child.kill();
        let _ = child.wait();
        let (fresh, url) = spawn.start(&addr)?;
        *child = fresh;
        self.url = url;
        Ok(t0.elapsed())
    }

    /// Starts a peer with its script in a private prefix, on the server core (the script's
    /// processes inherit the pinning).
    pub fn peer(
        peer: &Peer,
        repo: &Path,
        prefix: &Path,
        pinning: &Pinning,
    ) -> Result<ServerProcess, SuiteError> {
        let script = repo.join(peer.script);
        let mut cmd = pinning.server_command(Path::new("bash"));
        let out = cmd
            .arg(&script)
            .args(["start", "0"])
            .env(peer.prefix_env, prefix)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| SuiteError::Server(format!("running {}: {e}", script.display())))?;
        if !out.status.success() {
            return Err(SuiteError::Server(format!(
                "{} start failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        let server = ServerProcess {
            url: field("listening on ").unwrap_or_default(),
            publish_url: field("publish on "),
            // Nchan's master only supervises: sample its worker. Pushpin's runner is sampled
            // with every process it started.
            pid: field("worker_pid ")
                .or_else(|| field("pid "))
                .and_then(|p| p.parse().ok()),
            kind: Kind::Peer {
                script,
                prefix_env: peer.prefix_env,
                prefix: prefix.to_owned(),
            },
            auth_token: None,
            registration_token: None,
        };
        if server.url.is_empty() {
            return Err(SuiteError::Server(format!(
                "{} start printed no address",
                peer.script
            )));
        }
        Ok(server)
    }

    /// Stops the server: SIGTERM and a wait (a kill past [`STOP_TIMEOUT`]).
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        match &mut self.kind {
            Kind::Pushbench { child, .. } => {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                let deadline = Instant::now() + STOP_TIMEOUT;
                while Instant::now() < deadline {
                    if matches!(child.try_wait(), Ok(Some(_))) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            Kind::Peer {
                script,
                prefix_env,
                prefix,
            } => {
                let _ = Command::new("bash")
                    .arg(&*script)
                    .arg("stop")
                    .env(*prefix_env, &*prefix)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) -> Result<(), SuiteError> {
    let pid = i32::try_from(pid).map_err(|_| SuiteError::Server(format!("pid {pid}")))?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
        .map_err(|e| SuiteError::Server(format!("{sig:?} to {pid}: {e}")))
}

/// The first line a child prints, or `None` when it prints none within `timeout`.
fn first_line(stdout: impl std::io::Read + Send + 'static, timeout: Duration) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let ok = reader.read_line(&mut line).is_ok_and(|n| n > 0);
        let _ = tx.send(ok.then(|| line.trim().to_owned()));
        // Keep reading so the server never blocks on a full pipe.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    rx.recv_timeout(timeout).ok().flatten()
}
