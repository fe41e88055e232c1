//! admin-settings.json → typed settings (being written).

use std::process::ExitCode;

/// `eci-agent check --settings FILE`.
pub fn check_command(args: &crate::cli::CheckArgs) -> ExitCode {
    eprintln!("eci-agent check: not implemented yet ({})", args.settings.display());
    ExitCode::from(70)
}
