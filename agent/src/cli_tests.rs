//! Unit tests of the hand-written command-line parser (`cli.rs`).

use super::*;

fn parse(args: &[&str]) -> Result<Cli, CliError> {
    Cli::parse_args(args.iter().map(OsString::from), None)
}

/// A value each flag accepts.
fn sample(flag: &Flag) -> &'static str {
    match flag.value {
        Some("IP") => "0.0.0.0",
        Some("system|user") => "user",
        Some(v) if v.ends_with("_MS") || v.ends_with("_BYTES") || v.ends_with("_MESSAGES") => "7",
        Some(v)
            if v.ends_with("_ENTRIES") || v.ends_with("_CONNECTIONS") || v.ends_with("_SECS") =>
        {
            "7"
        }
        Some("LOG_RATE") | Some("COUNTERS_PER_APP") | Some("COUNTER_APPS") => "7",
        _ => "x=y",
    }
}

#[test]
fn every_flag_sets_its_field() {
    for flag in FLAGS {
        let mut args = vec![format!("--{}", flag.name)];
        if flag.value.is_some() {
            args.push(sample(flag).into());
        }
        if flag.name == "client-cert" {
            args.extend(["--client-key".into(), "k".into()]);
        }
        if flag.name == "client-key" {
            args.extend(["--client-cert".into(), "c".into()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let cli = parse(&args).unwrap_or_else(|e| panic!("--{}: {e}", flag.name));
        assert_ne!(cli, Cli::default(), "--{} set nothing", flag.name);
    }
}

#[test]
fn values_go_to_their_fields_in_both_spellings() {
    let a = parse(&[
        "--device-id",
        "dev-1",
        "--label",
        "a=1",
        "--label=b=2",
        "--log-rate=5",
        "--counter-apps",
        "3",
        "--forward-listen",
        "0.0.0.0",
        "--require-signatures",
        "--data-dir",
        "/var/lib/fleet",
    ])
    .expect("valid");
    assert_eq!(a.device_id.as_deref(), Some("dev-1"));
    assert_eq!(a.labels, ["a=1", "b=2"]);
    assert_eq!(a.log_rate, Some(5));
    assert_eq!(a.limits.counter_apps, Some(3));
    assert_eq!(a.forward_listen, Some([0, 0, 0, 0].into()));
    assert!(a.require_signatures);
    assert_eq!(a.data_dir, Some(PathBuf::from("/var/lib/fleet")));
}

#[test]
fn bad_command_lines_are_named() {
    assert_eq!(
        parse(&["--bogus"]),
        Err(CliError::Unexpected("--bogus".into()))
    );
    assert_eq!(parse(&["stray"]), Err(CliError::Unexpected("stray".into())));
    assert_eq!(
        parse(&["--server"]),
        Err(CliError::MissingValue("server", "SERVER"))
    );
    assert_eq!(
        parse(&["--server", "a", "--server", "b"]),
        Err(CliError::Repeated("server"))
    );
    assert_eq!(
        parse(&["--require-signatures=yes"]),
        Err(CliError::SwitchValue("require-signatures", "yes".into()))
    );
    assert_eq!(
        parse(&["--client-cert", "c.pem"]),
        Err(CliError::Requires("client-key"))
    );
    assert_eq!(
        parse(&["--client-key", "k.pem"]),
        Err(CliError::Requires("client-cert"))
    );
    let e = parse(&["--log-rate", "fast"]).expect_err("not a number");
    let text = e.to_string();
    assert!(
        text.contains("--log-rate") && text.contains("'fast'"),
        "{text}"
    );
    let e = parse(&["--forward-listen", "localhost"]).expect_err("not an IP");
    assert!(e.to_string().contains("--forward-listen <IP>"), "{e}");
}

#[test]
fn help_and_version_are_requests() {
    assert_eq!(parse(&["--device-id", "d", "--help"]), Err(CliError::Help));
    assert_eq!(parse(&["-h"]), Err(CliError::Help));
    assert_eq!(parse(&["-V"]), Err(CliError::Version));
}

#[test]
fn the_enroll_token_flag_wins_over_the_environment() {
    let env = Some("from-env".to_string());
    let none: [&str; 0] = [];
    let cli = Cli::parse_args(none.iter().map(OsString::from), env.clone()).expect("valid");
    assert_eq!(cli.enroll_token.as_deref(), Some("from-env"));
    let cli = Cli::parse_args(
        ["--enroll-token", "from-flag"].iter().map(OsString::from),
        env,
    )
    .expect("valid");
    assert_eq!(cli.enroll_token.as_deref(), Some("from-flag"));
}

#[test]
fn help_lists_every_flag_with_its_value() {
    let text = help();
    for f in FLAGS {
        let line = match f.value {
            Some(v) => format!("--{} <{v}>\n", f.name),
            None => format!("--{}\n", f.name),
        };
        assert!(text.contains(&line), "{line} missing from:\n{text}");
        assert!(text.contains(f.help), "help of --{} missing", f.name);
    }
}
