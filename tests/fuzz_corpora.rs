//! Replays every saved fuzz corpus (`fuzz/corpus/<target>/`) through the
//! same property checks the fuzz targets run, on the stable toolchain: a
//! crash that fuzzing once found stays found. `./dev fuzz` grows them.

use std::path::Path;

#[test]
fn every_corpus_replays_without_a_broken_property() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (target, check) in portcullis::fuzzing::TARGETS {
        let dir = root.join(target);
        let entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        assert!(!entries.is_empty(), "corpus {target} is empty");
        for file in entries {
            // `./dev fuzz` may be growing or minimizing this corpus right now.
            let Ok(data) = std::fs::read(&file) else {
                continue;
            };
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(
                outcome.is_ok(),
                "{target}: {} breaks a property",
                file.display()
            );
        }
        eprintln!("{target}: replayed");
    }
}
