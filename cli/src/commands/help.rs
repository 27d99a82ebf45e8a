//! `ferry completions SHELL` and `ferry man`: what clap knows of the
//! command line, as shell completions and as a manual page.

use std::process::ExitCode;

use clap::CommandFactory;

use crate::args::Cli;

/// Prints the completions for `shell` on standard output.
pub(crate) fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "ferry", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// Prints the manual page (roff) of ferry, or of one of its commands
/// (`ferry-get(1)`), on standard output.
#[allow(clippy::print_stderr)]
pub(crate) fn man(of: Option<&str>) -> ExitCode {
    let ferry = Cli::command();
    let command = match of {
        None => ferry,
        Some(name) => match ferry.find_subcommand(name) {
            Some(sub) => {
                let title = format!("ferry-{name}");
                sub.clone()
                    .display_name(title)
                    .bin_name(format!("ferry {name}"))
                    .version(env!("CARGO_PKG_VERSION"))
            }
            None => {
                let known: Vec<&str> = ferry.get_subcommands().map(|c| c.get_name()).collect();
                eprintln!("ferry: no command {name:?} (one of {})", known.join(", "));
                return ExitCode::from(2);
            }
        },
    };
    match clap_mangen::Man::new(command).render(&mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry: writing the manual page: {e}");
            ExitCode::from(2)
        }
    }
}
