//! The `pointsd` command: parses the command line and hands it to the library
//! (`pointsd::cli`); everything else, including what each command does, lives there.

use std::process::ExitCode;

use clap::Parser;

use pointsd::cli::{self, Cli};

fn main() -> ExitCode {
    match cli::run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", cli::render_error(&e));
            ExitCode::FAILURE
        }
    }
}
