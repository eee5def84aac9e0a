//! A small filesystem of its own for disk-full tests: a tmpfs mounted on a directory (root
//! only), fillers that take all but a chosen amount of its space or of its inodes, and an
//! unmount when the test ends. Where mounting is not permitted the test says so loudly and
//! skips; with FLEET_REQUIRE_EXTERNAL=1 (CI) that is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Inodes of each tmpfs: plenty for a test's data directory, few enough to use them all up.
pub const INODES: u64 = 4096;

/// A mounted tmpfs, unmounted on drop.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB and [`INODES`] inodes on `dir` (created if missing), or
    /// returns None after a loud notice when mounting is not permitted here.
    pub fn mount(dir: &Path, mib: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).expect("create the mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,nr_inodes={INODES}"),
            ])
            .arg("tmpfs")
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
                fleet_testkit::skip_or_fail(&msg);
                None
            }
        }
    }

    /// Bytes still free for unprivileged writers.
    pub fn available(&self) -> u64 {
        self.stat("%a") * self.stat("%S")
    }

    /// Writes a filler file so that only `leave` bytes (rounded to the filesystem's blocks)
    /// stay free; it tops the filler up while the first estimate left more.
    pub fn fill_leaving(&self, leave: u64) {
        let path = self.filler();
        let _ = std::fs::remove_file(&path);
        let chunk = vec![0xa5_u8; 1 << 20];
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("create the filler");
        for _ in 0..4 {
            let mut left = self.available().saturating_sub(leave);
            if left == 0 {
                break;
            }
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                std::io::Write::write_all(&mut f, &chunk[..n]).expect("write the filler");
                left -= n as u64;
            }
            f.sync_all().expect("sync the filler");
        }
    }

    /// Creates empty files until only `leave` inodes are free (a disk whose inode table is full
    /// answers new files with the same "No space left on device").
    pub fn fill_inodes_leaving(&self, leave: u64) {
        let dir = self.dir.join("zz-inodes");
        std::fs::create_dir_all(&dir).expect("create the inode filler directory");
        let mut n = 0u64;
        for _ in 0..4 {
            let excess = self.stat("%d").saturating_sub(leave);
            if excess == 0 {
                return;
            }
            for _ in 0..excess {
                let _ = std::fs::File::create(dir.join(n.to_string()));
                n += 1;
            }
        }
        panic!("could not use up the inodes of {}", self.dir.display());
    }

    /// Removes the fillers: the space and the inodes are back.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.filler());
        let _ = std::fs::remove_dir_all(self.dir.join("zz-inodes"));
    }

    /// One field of `stat -f` (a number) for the mount.
    fn stat(&self, field: &str) -> u64 {
        let out = Command::new("stat")
            .args(["-f", "-c", field])
            .arg(&self.dir)
            .output()
            .expect("run stat -f");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("stat -f prints a number")
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
