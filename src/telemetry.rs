//! Logging: `tracing` to stderr as JSON or text, with Pingora's `log`
//! records bridged in. Lines are formatted on the thread that logs and
//! appended to that thread's own buffer; a writer thread of its own takes
//! the buffers every few milliseconds and writes each in one call. So a
//! request thread makes no system call and wakes no other thread to log
//! (a channel to the writer cost a futex wake and the writer's spinning
//! per line: BENCHMARKS.md). A thread whose buffer passes
//! [`BUFFER_LIMIT`] (stderr blocked, or slower than the lines) writes it
//! out itself: blocking rather than dropping. [`flush`] writes out what is
//! left before the process exits. Records below the configured level are
//! refused where they are made: Pingora's `debug!` costs a comparison, not
//! a dispatch.

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

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

/// How often the writer thread takes the threads' buffers.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// A thread's buffer past this size is written by that thread.
const BUFFER_LIMIT: usize = 1 << 20;

/// One thread's lines not yet written. Its thread appends; the writer
/// swaps it for an empty one, which holds the lock for a moment only.
type Buffer = Arc<Mutex<Vec<u8>>>;

/// The buffers of every thread that has logged, and the output.
struct Batched {
    buffers: Mutex<Vec<Buffer>>,
    /// Held while a buffer is written, so that lines stay whole.
    out: Mutex<Box<dyn Write + Send>>,
}

static BATCHED: OnceLock<Batched> = OnceLock::new();

thread_local! {
    /// This thread's buffer, and the [`Batched`] (by address) it is in.
    static MINE: RefCell<Option<(usize, Buffer)>> = const { RefCell::new(None) };
}

impl Batched {
    fn get() -> &'static Batched {
        BATCHED.get_or_init(|| Batched::new(Box::new(std::io::stderr())))
    }

    fn new(out: Box<dyn Write + Send>) -> Batched {
        Batched {
            buffers: Mutex::new(Vec::new()),
            out: Mutex::new(out),
        }
    }

    /// Appends to this thread's buffer (registering it on first use).
    fn append(&'static self, bytes: &[u8]) {
        let full = MINE.try_with(|mine| {
            let mut mine = mine.borrow_mut();
            let me = self as *const Batched as usize;
            if mine.as_ref().is_some_and(|(of, _)| *of != me) {
                *mine = None;
            }
            let (_, buffer) = mine.get_or_insert_with(|| {
                let b: Buffer = Arc::default();
                if let Ok(mut all) = self.buffers.lock() {
                    all.push(b.clone());
                }
                (me, b)
            });
            match buffer.lock() {
                Ok(mut lines) => {
                    lines.extend_from_slice(bytes);
                    (lines.len() > BUFFER_LIMIT).then(|| std::mem::take(&mut *lines))
                }
                Err(_) => Some(bytes.to_vec()),
            }
        });
        match full {
            Ok(Some(lines)) => self.write(&lines),
            Ok(None) => {}
            // The thread is being torn down: no buffer of its own left.
            Err(_) => self.write(bytes),
        }
    }

    fn write(&self, lines: &[u8]) {
        if lines.is_empty() {
            return;
        }
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(lines);
        }
    }

    /// Writes out every thread's buffer; forgets those of threads gone.
    fn drain(&self, spare: &mut Vec<u8>) {
        let buffers: Vec<Buffer> = match self.buffers.lock() {
            Ok(mut all) => {
                // Only the registry holds the buffer of a thread that ended
                // (its last lines are still written below, once).
                let (gone, live): (Vec<Buffer>, Vec<Buffer>) =
                    all.drain(..).partition(|b| Arc::strong_count(b) == 1);
                *all = live.clone();
                live.into_iter().chain(gone).collect()
            }
            Err(_) => return,
        };
        for buffer in buffers {
            if let Ok(mut lines) = buffer.lock() {
                std::mem::swap(&mut *lines, spare);
            }
            self.write(spare);
            spare.clear();
        }
    }
}

/// What the fmt layer writes one event into: the thread's buffer.
struct ToBuffer;

impl Write for ToBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        Batched::get().append(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the global subscriber for a server: lines written by a
/// thread of their own. Call once, before anything logs.
pub fn init(log: &Log) {
    let batched = Batched::get();
    let started = std::thread::Builder::new()
        .name("portcullis-log".into())
        .spawn(move || {
            let mut spare = Vec::new();
            loop {
                std::thread::sleep(FLUSH_EVERY);
                batched.drain(&mut spare);
            }
        });
    if started.is_err() {
        // No writer thread: each line is written where it is made.
        install(log, BoxMakeWriter::new(std::io::stderr));
        return;
    }
    install(log, BoxMakeWriter::new(|| ToBuffer));
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

/// Writes out every buffered line. Call before the process exits.
pub fn flush() {
    if let Some(batched) = BATCHED.get() {
        batched.drain(&mut Vec::new());
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An output the test reads back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn leaked(out: &Shared) -> &'static Batched {
        Box::leak(Box::new(Batched::new(Box::new(out.clone()))))
    }

    fn lines(out: &Shared) -> Vec<String> {
        String::from_utf8(out.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Every line of every thread arrives once, whole and in its thread's
    /// order, including those of threads that ended before the writer ran
    /// and those logged while it drained.
    #[test]
    fn lines_of_many_threads_arrive_whole_and_in_order() {
        let out = Shared::default();
        let batched = leaked(&out);
        let drainer = std::thread::spawn(move || {
            let mut spare = Vec::new();
            for _ in 0..50 {
                batched.drain(&mut spare);
                std::thread::yield_now();
            }
        });
        let threads: Vec<_> = (0..8)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        batched.append(
                            format!("thread={t} line={i} {}\n", "x".repeat(i % 300)).as_bytes(),
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drainer.join().unwrap();
        batched.drain(&mut Vec::new());
        let got = lines(&out);
        assert_eq!(got.len(), 8 * 2000);
        let mut next = [0usize; 8];
        for line in &got {
            let mut words = line.split(' ');
            let t: usize = words.next().unwrap()["thread=".len()..].parse().unwrap();
            let i: usize = words.next().unwrap()["line=".len()..].parse().unwrap();
            assert_eq!(i, next[t], "thread {t}'s lines out of order or lost");
            assert_eq!(
                words.next().unwrap_or("").len(),
                i % 300,
                "line cut: {line}"
            );
            next[t] += 1;
        }
        // The ended threads' buffers are forgotten once written.
        assert!(batched.buffers.lock().unwrap().is_empty());
    }

    /// A thread whose lines pile up past the limit (no writer running)
    /// writes them itself instead of growing without bound.
    #[test]
    fn a_full_buffer_is_written_by_its_thread() {
        let out = Shared::default();
        let batched = leaked(&out);
        let line = format!("{}\n", "y".repeat(1023));
        std::thread::spawn(move || {
            for _ in 0..(BUFFER_LIMIT / line.len() + 10) {
                batched.append(line.as_bytes());
            }
        })
        .join()
        .unwrap();
        let written = lines(&out).len();
        assert!(
            written > BUFFER_LIMIT / 1024,
            "{written} lines written before a drain"
        );
        batched.drain(&mut Vec::new());
        assert_eq!(lines(&out).len(), BUFFER_LIMIT / 1024 + 10);
    }
}
