//! The confined walk against real directories holding hostile links.

use super::*;
use std::os::unix::fs::symlink;

fn tree() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("d")).expect("mkdir");
    std::fs::write(dir.path().join("host"), "host").expect("host file");
    std::fs::write(root.join("lib.so.1"), "lib").expect("file");
    (dir, root)
}

#[test]
fn in_tree_links_are_followed_to_their_physical_path() {
    let (_dir, root) = tree();
    symlink("lib.so.1", root.join("lib.so")).expect("link");
    symlink("..", root.join("d/up")).expect("link");
    let (_, rel) = open_file(&root, Path::new("lib.so"), OFlag::O_RDONLY).expect("opens");
    assert_eq!(rel, Path::new("lib.so.1"));
    let (_, rel) = open_file(&root, Path::new("d/up/d/up/lib.so"), OFlag::O_RDONLY).expect("ok");
    assert_eq!(rel, Path::new("lib.so.1"));
}

#[test]
fn chained_and_absolute_links_out_are_refused() {
    let (dir, root) = tree();
    symlink("..", root.join("d/up")).expect("link");
    symlink("d/up/d/up/..", root.join("esc")).expect("link");
    symlink(dir.path().join("host"), root.join("abs")).expect("link");
    for p in ["esc/host", "abs", "d/up/..", "esc"] {
        let err = walk(&root, Path::new(p), Links::Follow, Missing::LastOnly)
            .expect_err(p)
            .to_string();
        assert!(err.contains("leads outside"), "{p}: {err}");
    }
    let err = walk(&root, Path::new("d/up/x"), Links::Refuse, Missing::Create)
        .expect_err("refused")
        .to_string();
    assert!(err.contains("symbolic link \"d/up\""), "{err}");
    let err = check_link(&root, Path::new("e"), OsStr::new("missing/../../x"))
        .expect_err("lexical escape")
        .to_string();
    assert!(err.contains("leads outside"), "{err}");
    check_link(&root, Path::new("d/l"), OsStr::new("../not-yet/there")).expect("dangling inside");
}

#[test]
fn link_loops_end_with_an_error() {
    let (_dir, root) = tree();
    symlink("b", root.join("a")).expect("link");
    symlink("a", root.join("b")).expect("link");
    let err = walk(&root, Path::new("a"), Links::Follow, Missing::LastOnly)
        .expect_err("loop")
        .to_string();
    assert!(err.contains("more than 40"), "{err}");
}
