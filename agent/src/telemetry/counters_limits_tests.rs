//! Issue 10: the counters table filled with junk and then answered 429 to a real app forever.
//! Here it is filled over real HTTP on the real endpoint; a real app's counter must then be
//! accepted once the junk's app is removed or has gone idle, and one app's junk names must not
//! cost another app anything.

use super::*;

const LIMITS: CounterLimits = CounterLimits {
    per_app: 4,
    apps: 3,
    idle: Duration::from_secs(600),
};

/// POSTs `body` to `app`'s own URL on the endpoint at `base`; returns the status line and body.
async fn post(c: &Counters, base: &str, app: &str, body: &str) -> String {
    let url = c.url_for(base, app);
    let rest = url.trim_start_matches("http://");
    let (addr, path) = rest.split_at(rest.find('/').expect("a path"));
    let mut s = TcpStream::connect(addr).await.expect("connects");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("writes");
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.expect("reads");
    resp
}

fn junk(app: &str, n: usize) -> String {
    let fields: Vec<String> = (0..n).map(|i| format!("\"{app}-junk-{i}\": 1")).collect();
    format!("{{{}}}", fields.join(","))
}

#[tokio::test]
async fn junk_never_locks_a_real_app_out() {
    let hits = Arc::new(LimitHits::default());
    let c = Counters::with_secret([3; 32]).bounded(LIMITS, hits.clone());
    let base = serve("127.0.0.1:0", c.clone()).await.expect("binds");

    // One app fills its own slots with junk: refused beyond them, and only it is refused.
    let resp = post(&c, &base, "noisy", &junk("noisy", 10)).await;
    assert!(resp.starts_with("HTTP/1.1 429"), "{resp}");
    assert!(
        resp.contains("app \"noisy\" already has 4 counters"),
        "{resp}"
    );
    let resp = post(&c, &base, "web", r#"{"requests": 10, "errors": 1}"#).await;
    assert!(
        resp.starts_with("HTTP/1.1 204"),
        "another app is unaffected: {resp}"
    );

    // Apps that come and go fill the app slots; the next real app is refused, naming why...
    let resp = post(&c, &base, "gone", &junk("gone", 1)).await;
    assert!(resp.starts_with("HTTP/1.1 204"), "{resp}");
    let resp = post(&c, &base, "db", r#"{"requests": 1}"#).await;
    assert!(resp.starts_with("HTTP/1.1 429"), "{resp}");
    assert!(resp.contains("counters of 3 apps"), "{resp}");
    assert_eq!(hits.count("counter_apps"), 1);
    assert_eq!(hits.count("counters_per_app"), 1);

    // ...until the removed app's slot is freed with it.
    c.forget("gone");
    let resp = post(&c, &base, "db", r#"{"requests": 1}"#).await;
    assert!(resp.starts_with("HTTP/1.1 204"), "after removal: {resp}");
    assert_eq!(c.get("db").get("requests"), Some(&1.0));

    // Idle junk expires: the noisy app's own real counter and a new app get in afterwards.
    let later = Instant::now() + LIMITS.idle;
    let real: BTreeMap<String, f64> = [("errors".to_string(), 2.0)].into();
    c.merge_at("noisy", real, later)
        .expect("the junk names went idle");
    c.merge_at("web", [("requests".to_string(), 11.0)].into(), later)
        .expect("web keeps reporting");
    c.merge_at("cache", [("requests".to_string(), 1.0)].into(), later)
        .expect("an idle app's slot is reused");
    assert_eq!(c.get("noisy").get("errors"), Some(&2.0));
    assert!(c.get("db").is_empty(), "db went idle and was forgotten");
}
