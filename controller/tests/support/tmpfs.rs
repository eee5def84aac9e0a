//! A small filesystem of its own for disk-full tests: a tmpfs mounted on a directory (root
//! only), a filler file that takes all but a chosen amount of its space, and an unmount when
//! the test ends. Where mounting is not permitted the test says so loudly and skips; with
//! FLEET_REQUIRE_EXTERNAL=1 (CI) that is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs, unmounted on drop.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB on `dir` (created if missing), or returns None after a
    /// loud notice when mounting is not permitted here.
    pub fn mount(dir: &Path, mib: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).expect("create the mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs {
                dir: dir.to_path_buf(),
            }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                let msg = format!(
                    "cannot mount a tmpfs on {} ({why}): disk-full tests need root",
                    dir.display()
                );
                if std::env::var("FLEET_REQUIRE_EXTERNAL").as_deref() == Ok("1") {
                    panic!("{msg}; FLEET_REQUIRE_EXTERNAL=1 makes this a failure");
                }
                eprintln!("\n!!!!! SKIPPED: {msg} !!!!!\n");
                None
            }
        }
    }

    /// Bytes still free for unprivileged writers.
    pub fn available(&self) -> u64 {
        let out = Command::new("stat")
            .args(["-f", "-c", "%a %S"])
            .arg(&self.dir)
            .output()
            .expect("run stat -f");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut words = text
            .split_whitespace()
            .map(|w| w.parse::<u64>().expect("a number"));
        let (blocks, size) = (
            words.next().expect("free blocks"),
            words.next().expect("block size"),
        );
        blocks * size
    }

    /// Writes a filler file so that only about `leave` bytes stay free.
    pub fn fill_leaving(&self, leave: u64) {
        let path = self.filler();
        let _ = std::fs::remove_file(&path);
        let size = self.available().saturating_sub(leave);
        let chunk = vec![0xa5_u8; 1 << 20];
        let mut f = std::fs::File::create(&path).expect("create the filler");
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            std::io::Write::write_all(&mut f, &chunk[..n]).expect("write the filler");
            left -= n as u64;
        }
    }

    /// Removes the filler: the space is back.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.filler());
    }

    fn filler(&self) -> PathBuf {
        self.dir.join("zz-filler")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
