//! wasmhost.toml parsing: any text gives a manifest or an error naming the
//! file (and a line inside the text), never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use wasmhost::model::manifest::Manifest;

fuzz_target!(|text: &str| {
    let path = Path::new("/projects/app/wasmhost.toml");
    if let Err(err) = Manifest::parse(path, text) {
        assert!(err.to_string().starts_with("/projects/app/wasmhost.toml"));
        if let Some(line) = err.line {
            // An error at the very end of text ending in a newline is on the
            // (empty) line after it, as an editor shows it.
            assert!(line >= 1 && line <= text.matches('\n').count() + 1);
        }
    }
});
