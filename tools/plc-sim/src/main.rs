//! `millwright-plc-sim`: the simulated PLC as a program, for the demo.
//!
//! ```text
//! millwright-plc-sim [--host 127.0.0.1] [--port 4840] [--variables 100] [--update-ms 100]
//!                    [--security on|off] [--pki-dir ./pki-plc-sim]
//! ```
//!
//! It prints the endpoint and the node ids, then serves until Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use millwright_plc_sim::{PlcSim, PlcSimOptions};

/// A simulated PLC: an OPC-UA server with changing values.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to bind and advertise.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to bind (0 picks a free one).
    #[arg(long, default_value_t = 4840)]
    port: u16,
    /// How many `Sim.V*` variables besides the `Press.*` ones.
    #[arg(long, default_value_t = 100)]
    variables: usize,
    /// How often values change, in milliseconds.
    #[arg(long, default_value_t = 100)]
    update_ms: u64,
    /// Offer a Basic256Sha256 SignAndEncrypt endpoint besides None.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    security: String,
    /// Where the server's certificate is generated (and reused).
    #[arg(long, default_value = "./pki-plc-sim")]
    pki_dir: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
    let args = Args::parse();
    let mut options = PlcSimOptions::new(args.pki_dir)
        .port(args.port)
        .variables(args.variables)
        .update_interval(Duration::from_millis(args.update_ms.max(1)));
    options.host = args.host;
    options.secure = args.security == "on";
    let sim = match PlcSim::start(options).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let ns = sim.namespace();
    println!("plc-sim listening on {}", sim.endpoint());
    println!(
        "security: None{}; users: anonymous, {} / {}",
        if sim.options().secure {
            ", Basic256Sha256 SignAndEncrypt"
        } else {
            ""
        },
        millwright_plc_sim::USER,
        millwright_plc_sim::PASSWORD
    );
    for name in millwright_plc_sim::PRESS_VARIABLES {
        println!("  ns={ns};s=Press.{name}");
    }
    if sim.options().variables > 0 {
        println!(
            "  ns={ns};s=Sim.V0000 .. ns={ns};s=Sim.V{:04}",
            sim.options().variables - 1
        );
    }
    let _ = tokio::signal::ctrl_c().await;
    sim.stop().await;
    ExitCode::SUCCESS
}
