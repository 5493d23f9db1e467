//! Logging: `tracing` to stderr as JSON or text, with Pingora's `log`
//! records bridged in. Lines are formatted on the thread that logs and
//! written by a thread of their own (a request thread never waits on
//! stderr), blocking rather than dropping when that writer falls 128k
//! lines behind; [`flush`] writes out what is left before the process
//! exits. Records below the configured level are refused where they are
//! made: Pingora's `debug!` costs a comparison, not a dispatch.

use std::sync::Mutex;

use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::prelude::*;

use crate::config::{Log, LogFormat};

/// Pingora's only error in `connectors`: a pooled upstream connection
/// still held by its idle watcher on another thread is not reused, and a
/// new one is opened. Nothing failed; at load it would fill the log.
fn benign(meta: &tracing::Metadata<'_>) -> bool {
    meta.target() == "pingora_core::connectors" && *meta.level() == tracing::Level::ERROR
}

/// The background writer's guard: dropping it writes out what is queued.
static WRITER: Mutex<Option<tracing_appender::non_blocking::WorkerGuard>> = Mutex::new(None);

/// Installs the global subscriber for a server: lines written by a
/// thread of their own. Call once, before anything logs.
pub fn init(log: &Log) {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("portcullis-log")
        .finish(std::io::stderr());
    if let Ok(mut slot) = WRITER.lock() {
        *slot = Some(guard);
    }
    install(log, BoxMakeWriter::new(writer));
}

fn install(log: &Log, writer: BoxMakeWriter) {
    let filter = EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let max = match filter.max_level_hint() {
        Some(l) => tracing_log::AsLog::as_log(&l),
        None => tracing_log::log::LevelFilter::Trace,
    };
    let _ = tracing_log::LogTracer::builder().with_max_level(max).init();
    let keep = filter_fn(|meta| !benign(meta));
    let _ = match log.format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(writer)
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
                    .with_writer(writer)
                    .with_filter(filter)
                    .with_filter(keep),
            )
            .try_init(),
    };
}

/// Writes out every queued line. Call before the process exits.
pub fn flush() {
    if let Some(guard) = WRITER.lock().ok().and_then(|mut g| g.take()) {
        drop(guard);
    }
}

/// For the commands that run before a config is loaded.
/// Written directly to stderr: these exit soon, anywhere.
pub fn init_default() {
    install(
        &Log {
            format: LogFormat::Text,
            level: "warn".to_string(),
        },
        BoxMakeWriter::new(std::io::stderr),
    );
}
