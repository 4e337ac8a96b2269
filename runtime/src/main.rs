//! The `millwright` binary: parses the command line and hands it to the library
//! ([`millwright_runtime::cli`]), where everything else lives.

use std::process::ExitCode;

use clap::Parser;
use millwright_runtime::cli::{Cli, run};

fn main() -> ExitCode {
    run(Cli::parse())
}
