//! `pushbench suite`, `pushbench report` and `pushbench compare`: the published experiments,
//! their charts and report, and checking a run against a published one.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use indicatif::{MultiProgress, ProgressDrawTarget};
use pushbench_loadgen::Profile;
use pushbench_suite::{Experiment, Progress, Scale, SuiteConfig};
use tokio_util::sync::CancellationToken;

/// Options of `pushbench suite`.
#[derive(Debug, Args)]
pub struct SuiteArgs {
    /// Every experiment, smaller and shorter (about 7 minutes instead of about 45).
    #[arg(long, conflicts_with = "scale")]
    pub quick: bool,
    /// full, quick or tiny (a few seconds per experiment, for tests).
    #[arg(long, value_parser = parse_scale, hide = true)]
    pub scale: Option<Scale>,
    /// Where to write the results (default: results/<date>-<host>/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Run only these experiments: floor, latency, fanout, capacity, throughput, polling,
    /// coherence, upstream, idle, gateway, faults (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = parse_experiment)]
    pub only: Vec<Experiment>,
    /// Also run production servers in [latency] and [fanout], those installed: `--peers` runs
    /// every one (Nchan, Pushpin), `--peers nchan,pushpin` picks some.
    #[arg(long, num_args = 0..=1, default_missing_value = "all", value_name = "LIST",
          value_parser = parse_peers)]
    pub peers: Option<PeerList>,
    /// No progress bars.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

fn parse_scale(s: &str) -> Result<Scale, String> {
    match s {
        "full" => Ok(Scale::Full),
        "quick" => Ok(Scale::Quick),
        "tiny" => Ok(Scale::Tiny),
        _ => Err(format!("unknown scale {s:?}; expected full, quick or tiny")),
    }
}

/// `--peers`' value: which production servers (a type of its own, so clap takes the list as
/// one value rather than many).
#[derive(Debug, Clone)]
pub struct PeerList(pub Vec<Profile>);

fn parse_peers(s: &str) -> Result<PeerList, String> {
    pushbench_suite::peer::parse_list(s).map(PeerList)
}

fn parse_experiment(s: &str) -> Result<Experiment, String> {
    Experiment::parse(s)
}

pub(crate) fn run(args: SuiteArgs) -> anyhow::Result<()> {
    let scale = args.scale.unwrap_or(if args.quick {
        Scale::Quick
    } else {
        Scale::Full
    });
    let out = args.out.clone().unwrap_or_else(default_out);
    let exe = std::env::current_exe().context("finding the pushbench binary")?;
    let config = SuiteConfig {
        scale,
        out: out.clone(),
        only: args.only.clone(),
        peers: args.peers.clone().map(|p| p.0).unwrap_or_default(),
        exe,
        repo: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        command: command_line(),
    };
    let progress = if args.quiet {
        Progress::hidden()
    } else {
        Progress::new(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let summary = runtime.block_on(async {
        let interrupt = CancellationToken::new();
        let on_signal = interrupt.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            on_signal.cancel();
        });
        Box::pin(pushbench_suite::run(config, &progress, interrupt)).await
    })?;
    println!("wrote {}", out.join("REPORT.md").display());
    for w in &summary.warnings {
        println!("warning: {w}");
    }
    if summary.interrupted {
        anyhow::bail!(
            "interrupted: {} holds the runs that finished",
            out.display()
        );
    }
    Ok(())
}

/// `results/<YYYY-MM-DD>-<host>`.
fn default_out() -> PathBuf {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let date = &pushbench_suite::report::utc(ms)[..10];
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    PathBuf::from("results").join(format!("{date}-{host}"))
}

fn command_line() -> String {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    args.insert(0, "pushbench".into());
    args.join(" ")
}

/// Options of `pushbench report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A suite's output directory (with summary.json).
    pub dir: PathBuf,
}

pub(crate) fn report(args: ReportArgs) -> anyhow::Result<()> {
    let summary = pushbench_suite::load_summary(&args.dir)?;
    pushbench_suite::render(&args.dir, &summary)?;
    println!("wrote {}", args.dir.join("REPORT.md").display());
    Ok(())
}

/// Options of `pushbench compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The published run's directory (e.g. results/full).
    pub published: PathBuf,
    /// The new run's directory.
    pub new: PathBuf,
    /// How far a ratio between techniques may move, as a fraction (0.3: from 1/1.3× to 1.3×).
    #[arg(long, default_value_t = 0.3)]
    pub tolerance: f64,
}

pub(crate) fn compare(args: CompareArgs) -> anyhow::Result<()> {
    if !(args.tolerance.is_finite() && args.tolerance > 0.0) {
        anyhow::bail!("--tolerance must be more than 0");
    }
    let published = pushbench_suite::load_summary(&args.published)?;
    let new = pushbench_suite::load_summary(&args.new)?;
    let c = pushbench_suite::compare::compare(&published, &new, args.tolerance);
    print!("{c}");
    if c.ratios.is_empty() {
        anyhow::bail!("no ratio to compare: the runs share no technique and metric");
    }
    if c.moved() > 0 {
        anyhow::bail!(
            "{} figure(s) moved against the other techniques past ±{:.0}%",
            c.moved(),
            args.tolerance * 100.0
        );
    }
    Ok(())
}
