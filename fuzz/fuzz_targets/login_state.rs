#![no_main]
// The property lives in portcullis::fuzzing, so that the test suite
// replays this target's corpus with the same checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis::fuzzing::login_state(data));
