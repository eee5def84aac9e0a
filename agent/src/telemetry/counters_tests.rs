//! The endpoint's parsing, keys and a real HTTP post.

use super::*;

#[test]
fn requests_are_parsed_bounded_and_keyed_per_app() {
    let c = Counters::with_secret([7; 32]);
    let web = c.key_for("web");
    let post = |path: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let req = post(
        &format!("/v1/metrics/web/{web}"),
        r#"{"requests":10,"errors":1}"#,
    );
    assert_eq!(handle(req.as_bytes(), &c).0, 204);
    assert_eq!(c.get("web").get("errors"), Some(&1.0));
    // Another app's key, no key, a key for another secret: refused, nothing stored.
    let db = c.key_for("db");
    let forged = post(&format!("/v1/metrics/web/{db}"), r#"{"errors":1000}"#);
    assert_eq!(handle(forged.as_bytes(), &c).0, 403);
    assert_eq!(handle(post("/v1/metrics/web", "{}").as_bytes(), &c).0, 401);
    let other = Counters::with_secret([8; 32]).key_for("web");
    assert_eq!(
        handle(
            post(&format!("/v1/metrics/web/{other}"), "{}").as_bytes(),
            &c
        )
        .0,
        403
    );
    assert_eq!(c.get("web").get("errors"), Some(&1.0));
    assert_eq!(
        handle(
            format!("GET /v1/metrics/web/{web} HTTP/1.1\r\n\r\n").as_bytes(),
            &c
        )
        .0,
        405
    );
    assert_eq!(handle(b"POST /other HTTP/1.1\r\n\r\n", &c).0, 404);
    assert_eq!(
        handle(
            post(&format!("/v1/metrics/web/{web}"), "not json").as_bytes(),
            &c
        )
        .0,
        400
    );
    assert_eq!(
        handle(b"POST /v1/metrics/../x HTTP/1.1\r\n\r\n{}", &c).0,
        400
    );
    let many: BTreeMap<String, f64> = (0..100).map(|i| (format!("k{i}"), 1.0)).collect();
    let err = c.merge("web", many).expect_err("over the per-app limit");
    assert!(err.to_string().contains("38 new ones refused"), "{err}");
    assert_eq!(
        c.get("web").len(),
        CounterLimits::default().per_app,
        "capped"
    );
}

#[tokio::test]
async fn a_real_http_post_is_stored() {
    let c = Counters::with_secret([1; 32]);
    let base = serve("127.0.0.1:0", c.clone()).await.expect("binds");
    let addr = base
        .trim_start_matches("http://")
        .trim_end_matches(PATH_PREFIX)
        .to_string();
    let mut s = TcpStream::connect(&addr).await.expect("connects");
    let body = r#"{"requests": 5}"#;
    let req = format!(
        "POST {PATH_PREFIX}svc/{} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        c.key_for("svc"),
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("writes");
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.expect("reads");
    assert!(resp.starts_with("HTTP/1.1 204"), "{resp}");
    assert_eq!(c.get("svc").get("requests"), Some(&5.0));
}
