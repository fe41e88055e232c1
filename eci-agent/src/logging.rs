//! Structured logs on stderr (tracing); `RUST_LOG` filters, default `info`. `--log-format json`
//! writes one JSON object per event (fields flattened), for log shippers: then every line the
//! agent writes is JSON, the `export DOCKER_HOST` line and a fatal error included.

use std::sync::OnceLock;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The format chosen at [`init`] (the first one: a second init keeps the first subscriber).
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

pub fn init(format: LogFormat) {
    let format = *FORMAT.get_or_init(|| format);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    // Colours only for a person at a terminal: log files and journals get plain text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second init (tests, embedded use) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or_default()
}

/// The line a shell evaluates to use the agent (`export DOCKER_HOST=unix://…` on stdout); under
/// `--log-format json` a JSON event with the same text in `docker_host` instead.
pub fn docker_host(listen: &std::path::Path) {
    let value = format!("unix://{}", listen.display());
    match format() {
        LogFormat::Text => println!("export DOCKER_HOST={value}"),
        LogFormat::Json => tracing::info!(docker_host = %value, "export DOCKER_HOST={value}"),
    }
}

/// The error that ends the process: `eci-agent: …` on stderr, or an ERROR event under
/// `--log-format json`.
pub fn fatal(err: &anyhow::Error) {
    match format() {
        LogFormat::Text => eprintln!("eci-agent: {err:#}"),
        LogFormat::Json => tracing::error!(fatal = true, "eci-agent: {err:#}"),
    }
}
