//! Logging: `tracing` to stderr as JSON or text, with Pingora's `log`
//! records bridged in.

use tracing_subscriber::EnvFilter;

use crate::config::{Log, LogFormat};

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(log: &Log) {
    let _ = tracing_log::LogTracer::init();
    let filter = EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// For the commands that run before a config is loaded.
pub fn init_default() {
    init(&Log {
        format: LogFormat::Text,
        level: "warn".to_string(),
    });
}
