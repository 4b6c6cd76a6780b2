//! `pushbench demo`: the live browser demo, printing `demo on http://ADDR/` first.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Args;
use pushbench_servers::demo::{self, Settings};
use pushbench_servers::{Hub, HubConfig, ServerConfig};

/// Options of `pushbench demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address to serve the page and every transport on; port 0 picks a free port, printed on
    /// the first line.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Events the built-in publisher sends per second at start (0 pauses it); the page can
    /// change it.
    #[arg(long, default_value_t = Settings::default().rate())]
    pub rate: f64,
    /// Bytes of each published payload at start.
    #[arg(long, default_value_t = Settings::default().payload_bytes())]
    pub payload_bytes: usize,
    /// The page's short-polling interval at start, in milliseconds.
    #[arg(long, default_value_t = Settings::default().poll_interval_ms())]
    pub poll_interval_ms: u64,
}

pub(crate) fn run(args: DemoArgs) -> anyhow::Result<()> {
    let settings = Settings::new(args.rate, args.payload_bytes, args.poll_interval_ms)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let listener =
            super::serve::bind_announced(args.addr, super::serve::LISTEN_BACKLOG, |addr| {
                format!("demo on http://{addr}/")
            })
            .await?;
        let hub = Hub::new(HubConfig::default());
        let report = demo::serve(
            listener,
            hub,
            ServerConfig::default(),
            settings,
            super::serve::shutdown_signal(),
        )
        .await;
        super::serve::warn_if_forced(report);
        Ok(())
    })
}
