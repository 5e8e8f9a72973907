//! `plugin.toml` text: parsing and validation never panic, and what validates keeps
//! its promises (names in their alphabet, paths inside the plugin directory).
#![no_main]

use libfuzzer_sys::fuzz_target;
use runinfer::manifest::Manifest;
use std::path::{Component, Path};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(manifest) = Manifest::parse(text, Path::new("plugin.toml")) else {
        return;
    };
    assert!(!manifest.name.is_empty() && manifest.name.len() <= 64);
    for entry in manifest.models.values() {
        assert!(
            entry
                .path()
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir)),
            "a model path leaves the plugin directory: {:?}",
            entry.path()
        );
    }
    let _ = manifest.handler_args();
});
