//! Tracing set-up: lines on stderr, filtered by `RUST_LOG` (default `info`),
//! either readable text or one JSON object per line (`--log-format json`).
//! One line per request is `--access-log`'s (`front/handler.rs`).

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
        // The request span's fields (method, path, project, version) also
        // come along under `span`, for the lines of code that run inside it.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// Writes a line no log filter may hide: the listening lines scripts wait
/// for, and the error a command exits with. In the chosen format, so a log
/// collector reading JSON sees nothing but JSON.
pub(crate) fn announce(format: LogFormat, level: &str, message: &str) {
    match format {
        LogFormat::Text => eprintln!("{message}"),
        LogFormat::Json => {
            use tracing_subscriber::fmt::time::FormatTime as _;
            let mut timestamp = String::new();
            let _ = tracing_subscriber::fmt::time::SystemTime.format_time(
                &mut tracing_subscriber::fmt::format::Writer::new(&mut timestamp),
            );
            let line = serde_json::json!({
                "timestamp": timestamp,
                "level": level,
                "message": message,
                "target": "wasmhost",
            });
            eprintln!("{line}");
        }
    }
}
