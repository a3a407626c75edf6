//! The console's static files, embedded in the binary: its own page, script and styles
//! (`web/`) and the vendored libraries (`vendor/`, see `vendor/VERSIONS`). Each is
//! compressed once (gzip and brotli, on the first console request, off the async workers)
//! and served under a name holding a hash of its content, so a browser may keep it forever
//! and a new binary's files are fetched anew. The page itself names the hashed files and is
//! never cached.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::sync::LazyLock;

/// The logical name, content type and bytes of every file; a script comes after the files
/// it imports (its imports are rewritten to their hashed names before it is hashed itself).
const FILES: &[(&str, &str, &[u8])] = &[
    ("preact-htm.js", JS, include_bytes!("vendor/preact-htm.js")),
    (
        "uPlot.iife.min.js",
        JS,
        include_bytes!("vendor/uPlot.iife.min.js"),
    ),
    ("uPlot.min.css", CSS, include_bytes!("vendor/uPlot.min.css")),
    ("i18n.js", JS, include_bytes!("web/i18n.js")),
    ("pages.js", JS, include_bytes!("web/pages.js")),
    ("budgets.js", JS, include_bytes!("web/budgets.js")),
    ("app.js", JS, include_bytes!("web/app.js")),
    ("app.css", CSS, include_bytes!("web/app.css")),
];

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

const INDEX: &str = include_str!("web/index.html");

/// One file as served.
pub struct Asset {
    /// `/console/assets/{stem}.{hash}.{ext}`.
    pub path: String,
    pub content_type: &'static str,
    pub raw: Vec<u8>,
    pub gzip: Vec<u8>,
    pub brotli: Vec<u8>,
}

pub struct Assets {
    pub files: Vec<Asset>,
    /// The page, its `{{name}}` placeholders replaced by the hashed paths.
    pub index: Asset,
}

/// The hashed path of `name`'s `bytes`.
fn hashed(name: &str, bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hash: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    match name.rsplit_once('.') {
        Some((stem, ext)) => format!("/console/assets/{stem}.{hash}.{ext}"),
        None => format!("/console/assets/{name}.{hash}"),
    }
}

fn compressed(path: String, content_type: &'static str, raw: Vec<u8>) -> Asset {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let gzip = gz
        .write_all(&raw)
        .and_then(|()| gz.finish())
        .unwrap_or_default();
    let mut brotli = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut brotli, 4096, 9, 22);
        if w.write_all(&raw).is_err() {
            log::warn!("console: brotli compression of {path} failed");
        }
    }
    Asset {
        path,
        content_type,
        raw,
        gzip,
        brotli,
    }
}

pub static ASSETS: LazyLock<Assets> = LazyLock::new(|| {
    let mut index = INDEX.to_string();
    let mut files: Vec<Asset> = Vec::new();
    let mut renamed: Vec<(String, String)> = Vec::new();
    for (name, content_type, bytes) in FILES {
        let mut bytes = bytes.to_vec();
        if *content_type == JS {
            let mut text = String::from_utf8_lossy(&bytes).into_owned();
            for (from, to) in &renamed {
                text = text.replace(from, to);
            }
            bytes = text.into_bytes();
        }
        let path = hashed(name, &bytes);
        index = index.replace(&format!("{{{{{name}}}}}"), &path);
        renamed.push((format!("\"./{name}\""), format!("\"{path}\"")));
        files.push(compressed(path, content_type, bytes));
    }
    Assets {
        files,
        index: compressed(
            "/console/".into(),
            "text/html; charset=utf-8",
            index.into_bytes(),
        ),
    }
});

/// The file served at `path`.
pub fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.files.iter().find(|a| a.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_every_file_by_its_hash_and_the_whole_is_small() {
        let a = &*ASSETS;
        let page = String::from_utf8_lossy(&a.index.raw);
        assert!(!page.contains("{{"), "every placeholder replaced");
        for f in &a.files {
            assert!(find(&f.path).is_some());
            assert!(!f.gzip.is_empty() && !f.brotli.is_empty(), "{}", f.path);
            assert!(f.brotli.len() < f.raw.len(), "{}", f.path);
        }
        // Imports between scripts use the hashed names.
        let app = a.files.iter().find(|f| f.path.contains("/app.")).unwrap();
        let text = String::from_utf8_lossy(&app.raw);
        assert!(!text.contains("\"./preact-htm.js\""), "{text:.200}");
        for f in a.files.iter().filter(|f| f.path.ends_with(".js")) {
            let text = String::from_utf8_lossy(&f.raw);
            assert!(
                !text.contains("from \"./"),
                "{}: an import not renamed",
                f.path
            );
        }
        let raw: usize = a.files.iter().map(|f| f.raw.len()).sum::<usize>() + a.index.raw.len();
        assert!(raw < 1_000_000, "the console adds {raw} bytes");
        let first_load: usize =
            a.files.iter().map(|f| f.gzip.len()).sum::<usize>() + a.index.gzip.len();
        assert!(
            first_load < 300_000,
            "a first load transfers {first_load} bytes"
        );
    }
}
