use super::*;
use std::os::unix::fs::PermissionsExt;

/// A stand-in `systemctl` recording its arguments; `show` answers from a file, and any
/// command naming `fleet-down@1.0.0.service` fails like a unit that is not loaded.
fn fake(dir: &Path) -> (PathBuf, PathBuf) {
    let calls = dir.join("calls");
    let show = dir.join("show");
    let fake = dir.join("systemctl");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$*\" >> {calls}\ncase \"$*\" in *fleet-down@*) echo 'Unit not loaded.' >&2; exit 5;; esac\n\
             case \"$*\" in *show*) cat {show};; esac\nexit 0\n",
            calls = calls.display(),
            show = show.display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (fake, calls)
}

#[test]
fn show_output_is_parsed_in_any_order() {
    let s = UnitState::parse(
        "MainPID=0\nNRestarts=4\nExecMainCode=2\nExecMainStatus=9\nActiveState=activating\n\
         SubState=auto-restart\nExecMainStartTimestampMonotonic=12\nExecMainPID=77\nbogus\n",
    );
    assert_eq!((s.restarts, s.exec_pid, s.exec_start), (4, 77, 12));
    assert_eq!(s.sub, "auto-restart");
    assert_eq!(s.exit_description(), "killed by SIGKILL");
    let s = UnitState::parse("ExecMainCode=1\nExecMainStatus=0\n");
    assert_eq!(s.exit_description(), crate::supervisor::CLEAN_EXIT);
}

#[tokio::test]
async fn units_are_written_enabled_started_and_removed_through_systemctl() {
    let d = tempfile::tempdir().expect("tempdir");
    let (program, calls) = fake(d.path());
    std::fs::write(d.path().join("show"), "ActiveState=active\nMainPID=5\n").expect("show");
    let units = d.path().join("units");
    let ctl = Systemctl::with_program(&program, Scope::User, &units);
    ctl.install("fleet-web@1.0.0.service", "[Service]\n")
        .await
        .expect("installs");
    let path = units.join("fleet-web@1.0.0.service");
    assert_eq!(std::fs::read_to_string(&path).expect("unit"), "[Service]\n");
    assert_eq!(
        ctl.installed(),
        [(
            "fleet-web@1.0.0.service".to_string(),
            "web".to_string(),
            "1.0.0".to_string()
        )]
    );
    ctl.start("fleet-web@1.0.0.service").await.expect("starts");
    assert_eq!(
        ctl.show("fleet-web@1.0.0.service")
            .await
            .expect("show")
            .main_pid,
        5
    );
    std::fs::write(d.path().join("show"), "ActiveState=inactive\nMainPID=0\n").expect("show");
    ctl.remove("fleet-web@1.0.0.service", Duration::from_secs(5))
        .await
        .expect("removes");
    assert!(!path.exists());
    // A unit that is not loaded is already gone: removing it is fine.
    ctl.remove("fleet-down@1.0.0.service", Duration::from_secs(5))
        .await
        .expect("nothing to remove");
    let calls = std::fs::read_to_string(&calls).expect("calls");
    let want = "--user daemon-reload\n--user enable fleet-web@1.0.0.service\n\
                --user start --no-block fleet-web@1.0.0.service\n";
    assert!(calls.starts_with(want), "{calls}");
    for line in [
        "--user stop fleet-web@1.0.0.service",
        "--user disable fleet-web@1.0.0.service",
        "--user reset-failed fleet-web@1.0.0.service",
    ] {
        assert!(
            calls.lines().any(|l| l == line),
            "{line} missing from {calls}"
        );
    }
}

#[tokio::test]
async fn a_manager_that_does_not_answer_is_reported() {
    let d = tempfile::tempdir().expect("tempdir");
    let broken = Systemctl::with_program(&d.path().join("missing"), Scope::User, d.path());
    let e = broken
        .start("fleet-web@1.0.0.service")
        .await
        .expect_err("fails");
    assert!(e.to_string().contains("systemctl start failed"), "{e}");
    assert!(broken.probe().is_err());
    let (program, _) = fake(d.path());
    std::fs::write(d.path().join("show"), "Version=252\nSystemState=running\n").expect("show");
    let ctl = Systemctl::with_program(&program, Scope::User, d.path());
    assert_eq!(ctl.probe(), Ok(()));
    std::fs::write(d.path().join("show"), "SystemState=offline\n").expect("show");
    assert!(ctl.probe().is_err());
    // The system scope needs systemd as PID 1; this test machine (a container) has none.
    if !Path::new(SYSTEM_MARKER).is_dir() {
        let sys = Systemctl::with_program(&program, Scope::System, d.path());
        let e = sys.probe().expect_err("no systemd");
        assert!(e.contains("PID 1"), "{e}");
    }
}
