//! `cellm`: with no subcommand it opens the desktop app; subcommands are the command line.

mod cli;
mod fatal;

use clap::Parser;

fn main() -> std::process::ExitCode {
    fatal::install_sigbus_handler();
    // Ctrl-C / SIGTERM: no `OUT.tmp-PID` (or settings temp file) is left behind.
    if let Err(e) = ctrlc::set_handler(|| {
        cellm_engine::atomic_file::remove_temp_files();
        eprintln!("interrupted");
        std::process::exit(130);
    }) {
        eprintln!(
            "warning: cannot handle Ctrl-C ({e}); an interrupted write may leave a temp file"
        );
    }
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
            Err(e) if fatal::is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}
