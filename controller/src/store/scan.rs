//! The vulnerability-scan hook: an optional command fleetd runs on every uploaded artifact
//! before it is stored (e.g. a wrapper around trivy or grype). The staged file's path is
//! appended as the last argument. Exit status 0 means no findings; any other status means
//! findings, reported from the command's output. With the reject policy, an artifact with
//! findings (or whose scan could not run) is refused at upload with the findings in the error.

use std::path::Path;
use std::time::Duration;

/// Most bytes of scanner output kept in an error message.
const MAX_FINDINGS: usize = 4096;

/// The configured hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanHook {
    /// Program and arguments (the file path is appended).
    pub command: Vec<String>,
    /// Refuse uploads with findings (otherwise they are logged and stored).
    pub reject: bool,
    /// Longest a scan may take.
    pub timeout: Duration,
}

/// Result of scanning one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanOutcome {
    /// Exit status 0.
    Clean,
    /// Non-zero exit: the scanner's output (truncated).
    Findings(String),
}

impl ScanHook {
    /// Parses `--scan-command` (whitespace-separated program and arguments).
    pub fn parse(command: &str, reject: bool, timeout: Duration) -> Option<Self> {
        let command: Vec<String> = command.split_whitespace().map(str::to_string).collect();
        (!command.is_empty()).then_some(Self {
            command,
            reject,
            timeout,
        })
    }

    /// Runs the scanner on `file`; `Err` when it cannot run or times out.
    pub async fn scan(&self, file: &Path) -> Result<ScanOutcome, String> {
        let (program, args) = self
            .command
            .split_first()
            .ok_or_else(|| "empty scan command".to_string())?;
        let child = tokio::process::Command::new(program)
            .args(args)
            .arg(file)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(self.timeout, child)
            .await
            .map_err(|_| {
                format!(
                    "scan command {program:?} timed out after {:?}",
                    self.timeout
                )
            })?
            .map_err(|e| format!("cannot run scan command {program:?}: {e}"))?;
        if out.status.success() {
            return Ok(ScanOutcome::Clean);
        }
        let mut text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let err = String::from_utf8_lossy(&out.stderr);
        if !err.trim().is_empty() {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(err.trim());
        }
        if text.len() > MAX_FINDINGS {
            let mut cut = MAX_FINDINGS;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str(" [truncated]");
        }
        if text.is_empty() {
            text = format!("scanner exited with {}", out.status);
        }
        Ok(ScanOutcome::Findings(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scanner_exit_status_decides_and_output_is_the_findings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("artifact");
        std::fs::write(&file, b"EICAR-like marker").expect("write");
        let script = dir.path().join("scan.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\nif grep -q marker \"$1\"; then echo 'CVE-2024-0001 high: marker found'; exit 1; fi\n",
        )
        .expect("write");
        let hook = ScanHook::parse(
            &format!("sh {}", script.display()),
            true,
            Duration::from_secs(10),
        )
        .expect("command");
        assert_eq!(
            hook.scan(&file).await,
            Ok(ScanOutcome::Findings(
                "CVE-2024-0001 high: marker found".into()
            ))
        );
        std::fs::write(&file, b"clean").expect("write");
        assert_eq!(hook.scan(&file).await, Ok(ScanOutcome::Clean));
        let missing =
            ScanHook::parse("/nonexistent/scanner", true, Duration::from_secs(1)).expect("command");
        assert!(missing
            .scan(&file)
            .await
            .expect_err("cannot run")
            .contains("/nonexistent/scanner"));
        assert!(ScanHook::parse("  ", true, Duration::from_secs(1)).is_none());
    }
}
