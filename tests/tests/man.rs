//! Every man page in `man/` renders with `man -l` without a single groff warning.

use std::path::PathBuf;
use std::process::Command;

fn pages() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../man");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("reading man/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.len() == 1 && e.as_bytes()[0].is_ascii_digit())
        })
        .collect();
    pages.sort();
    pages
}

#[test]
fn man_pages_render_without_warnings() {
    let pages = pages();
    assert!(
        pages.len() >= 2,
        "expected the hand-written pages in man/, found {pages:?}"
    );
    for page in pages {
        let out = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&page)
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .expect("running man");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "man -l {} failed: {stderr}",
            page.display()
        );
        assert!(
            stderr.trim().is_empty(),
            "man -l {} warned:\n{stderr}",
            page.display()
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("NAME") && text.contains("SEE ALSO"),
            "{} lacks NAME or SEE ALSO",
            page.display()
        );
    }
}
