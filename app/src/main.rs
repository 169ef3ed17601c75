//! `cellm`: with no subcommand it opens the desktop app; subcommands are the command line.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    if let Some(model) = &args.model
        && args.command.is_none()
        && !model.is_file()
    {
        eprintln!("error: {} is not a model file", model.display());
        return std::process::ExitCode::FAILURE;
    }
    match args.command {
        None => match cellm_app::gui::run(args.model) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
        Some(cmd) => match cli::dispatch(cmd) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}
