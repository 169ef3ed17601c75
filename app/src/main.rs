//! `cellm`: with no subcommand it opens the desktop app; subcommands are the command line.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    match args.command {
        None => {
            eprintln!("error: the desktop app is not yet implemented; see `cellm --help`");
            std::process::ExitCode::from(2)
        }
        Some(cmd) => match cli::dispatch(cmd) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}
