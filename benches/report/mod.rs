//! What the benches write into BENCHMARKS.md: the machine, the commit,
//! and their own section of the file (between `<!-- NAME:begin -->` and
//! `<!-- NAME:end -->`, rewritten by each run; the rest of the file is
//! left as it is).

use std::path::Path;
use std::process::Command;

/// `N cores and M GiB`.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| format!("{:.0} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_else(|| "? GiB".into());
    format!("{cores} cores and {memory}")
}

/// `git describe --always --dirty` of the repository.
pub fn commit() -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Replaces the section `name` of BENCHMARKS.md with `text`; a file
/// without it gains it at the end, under `heading`.
pub fn write_section(name: &str, heading: &str, text: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let (begin, end) = (
        format!("<!-- {name}:begin -->"),
        format!("<!-- {name}:end -->"),
    );
    let section = format!("{begin}\n{text}{end}");
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(a), Some(b)) if a < b => {
            format!("{}{section}{}", &old[..a], &old[b + end.len()..])
        }
        _ => format!("{}\n\n{heading}\n\n{section}\n", old.trim_end()),
    };
    std::fs::write(&path, new).unwrap();
    println!("written to {}", path.display());
}
