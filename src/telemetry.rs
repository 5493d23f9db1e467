//! Logging: `tracing` to stderr as JSON or text, with Pingora's `log`
//! records bridged in.

use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::prelude::*;

use crate::config::{Log, LogFormat};

/// Pingora's only error in `connectors`: a pooled upstream connection
/// still held by its idle watcher on another thread is not reused, and a
/// new one is opened. Nothing failed; at load it would fill the log.
fn benign(meta: &tracing::Metadata<'_>) -> bool {
    meta.target() == "pingora_core::connectors" && *meta.level() == tracing::Level::ERROR
}

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(log: &Log) {
    let _ = tracing_log::LogTracer::init();
    let filter = EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let keep = filter_fn(|meta| !benign(meta));
    let _ = match log.format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stderr)
                    .with_filter(filter)
                    .with_filter(keep),
            )
            .try_init(),
        LogFormat::Text => tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    // Colours for a terminal only: a log file or a
                    // collector gets plain `key=value` text.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr)
                    .with_filter(filter)
                    .with_filter(keep),
            )
            .try_init(),
    };
}

/// For the commands that run before a config is loaded.
pub fn init_default() {
    init(&Log {
        format: LogFormat::Text,
        level: "warn".to_string(),
    });
}
