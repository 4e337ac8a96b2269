//! `millwright-cmms-sim`: serves the in-memory CMMS until Ctrl-C (see the library's docs).

use std::net::SocketAddr;

use clap::Parser;

/// A small in-memory CMMS for the Millwright demo.
#[derive(Debug, Parser)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8089")]
    listen: SocketAddr,
    /// The assets it knows, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "press1,mixer2,oven3,conveyor4"
    )]
    assets: Vec<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let assets: Vec<&str> = args.assets.iter().map(String::as_str).collect();
    let sim = match millwright_cmms_sim::CmmsSim::start(args.listen, &assets).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    println!(
        "cmms-sim: listening on {} ({} assets)",
        sim.base_url(),
        assets.len()
    );
    let _ = tokio::signal::ctrl_c().await;
    std::process::ExitCode::SUCCESS
}
