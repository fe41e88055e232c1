//! `eci-agent check`: validates an admin-settings.json and prints the normalised policy.

use std::{path::PathBuf, process::ExitCode};

use crate::settings::{EXIT_INVALID, SettingsError, load, render};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[arg(long)]
    pub settings: PathBuf,
}

/// `eci-agent check --settings FILE`: prints the normalised policy; exit 0 only when valid.
pub fn command(args: &Args) -> ExitCode {
    match load(&args.settings) {
        Ok(settings) => {
            print!("{}", render(&settings));
            for w in &settings.warnings {
                eprintln!("warning: {w}");
            }
            ExitCode::SUCCESS
        }
        Err(SettingsError::Invalid { path, errors }) => {
            eprintln!("{}: invalid settings", path.display());
            for e in &errors {
                eprintln!("error: {e}");
            }
            ExitCode::from(EXIT_INVALID)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}
