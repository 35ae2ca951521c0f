//! Tracing set-up: lines on stderr, filtered by `RUST_LOG` (default `info`;
//! `RUST_LOG=wasmhost=debug` adds one line per request), either readable
//! text or one JSON object per line (`--log-format json`).

use tracing_subscriber::EnvFilter;

/// The shape of log lines (`--log-format`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub(crate) fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        // The event's fields (`project`, `version`, `request_id`, the
        // message, …) as top-level keys, so a log collector can index them
        // without knowing our spans; every line that concerns a project
        // names it in its own fields.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}
