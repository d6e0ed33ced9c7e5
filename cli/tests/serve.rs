//! `mrsampler serve` on loopback: batched requests give `restore`'s bytes, bad requests get a
//! JSON 4xx, a slow one a 504, a full queue a 503 with Retry-After, and a SIGTERM finishes the
//! running requests before the process exits.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{mrsampler, rgb};

/// A running `mrsampler serve` and its base URL.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mrsampler"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("serve exited before listening")
                .unwrap();
            if let Some((_, addr)) = line.split_once("listening on ") {
                break addr.trim().to_owned();
            }
        };
        // Keep draining stderr so that the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Self { child, url }
    }

    /// Sends SIGTERM and waits for the process; returns whether it exited successfully.
    fn terminate(mut self) -> bool {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        self.child.wait().unwrap().success()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// POSTs `body` to `/v1/restore?query`: status, Retry-After, body.
fn post(url: &str, query: &str, body: &[u8]) -> (u16, Option<String>, Vec<u8>) {
    let mut response = agent()
        .post(format!("{url}/v1/restore?{query}"))
        .send(body)
        .unwrap();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.body_mut().read_to_vec().unwrap();
    (response.status().as_u16(), retry, bytes)
}

fn get(url: &str, path: &str) -> (u16, String) {
    let mut response = agent().get(format!("{url}{path}")).call().unwrap();
    let text = response.body_mut().read_to_string().unwrap();
    (response.status().as_u16(), text)
}

#[test]
fn batched_requests_give_restores_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["a.png", "b.png", "c.png", "d.png"];
    for (k, name) in names.iter().enumerate() {
        rgb(&dir.path().join(name), 40, 32, k as u32);
    }
    let files: Vec<String> = names
        .iter()
        .map(|n| dir.path().join(n).to_string_lossy().into_owned())
        .collect();
    let out = dir.path().join("restored");
    let mut args = vec!["restore", "--quiet", "--nfe", "6", "--seed", "7", "--out"];
    let out_arg = out.to_string_lossy().into_owned();
    args.push(&out_arg);
    args.extend(files.iter().map(String::as_str));
    let (ok, text) = mrsampler(&args);
    assert!(ok, "{text}");

    let server = Server::start(&["--max-batch", "4", "--nfe", "6"]);
    let (status, health) = get(&server.url, "/health");
    assert_eq!(status, 200);
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    // Four requests at once, some a step apart: they share batched network calls.
    let threads: Vec<_> = names
        .iter()
        .zip(&files)
        .map(|(name, file)| {
            let (url, body) = (server.url.clone(), std::fs::read(file).unwrap());
            let query = format!("seed=7&name={name}");
            std::thread::spawn(move || post(&url, &query, &body))
        })
        .collect();
    for (name, thread) in names.iter().zip(threads) {
        let (status, _, png) = thread.join().unwrap();
        assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&png));
        let expected = std::fs::read(out.join(name)).unwrap();
        assert!(
            png == expected,
            "{name}: the served PNG differs from restore's"
        );
    }
    let (_, metrics) = get(&server.url, "/metrics");
    let value = |name: &str| metric(&metrics, name);
    assert_eq!(value("mrsampler_requests_total{outcome=\"ok\"}"), 4.0);
    // 24 evaluations in fewer calls: some calls held several requests.
    assert_eq!(value("mrsampler_batch_size_sum"), 24.0);
    assert!(value("mrsampler_batch_size_count") < 24.0, "{metrics}");
    let (status, openapi) = get(&server.url, "/openapi.json");
    assert_eq!(status, 200);
    assert!(openapi.contains("/v1/restore"));
    assert!(server.terminate());
}

#[test]
fn bad_requests_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&[
        "--max-pixels",
        "2000",
        "--max-body",
        "100000",
        "--timeout",
        "1",
    ]);
    let small = dir.path().join("small.png");
    rgb(&small, 40, 32, 1);
    let body = std::fs::read(&small).unwrap();
    let big = dir.path().join("big.png");
    rgb(&big, 64, 64, 1);
    let gray = dir.path().join("gray.png");
    image::GrayImage::new(8, 8).save(&gray).unwrap();
    for (query, body, status, needle) in [
        ("", b"not an image".to_vec(), 400, "cannot read the image"),
        ("", Vec::new(), 400, "empty"),
        (
            "colour=red",
            body.clone(),
            400,
            "unknown parameter `colour`",
        ),
        ("nfe=0", body.clone(), 400, "nfe 0"),
        ("nfe=ten", body.clone(), 400, "nfe `ten`"),
        ("sampler=mrs-ode-9", body.clone(), 400, "orders 1–3"),
        ("sampler=posterior:noise", body.clone(), 400, "alone"),
        ("", std::fs::read(&big).unwrap(), 413, "4096 pixels"),
        ("", vec![0u8; 200_000], 413, "100000 bytes"),
        ("", std::fs::read(&gray).unwrap(), 422, "3-channel"),
    ] {
        let (got, _, text) = post(&server.url, query, &body);
        let text = String::from_utf8_lossy(&text).into_owned();
        assert_eq!(got, status, "{query}: {text}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let message = json["error"].as_str().unwrap();
        assert!(message.contains(needle), "{query}: {message}");
    }
    // Past --timeout: 504, and the request leaves its batch.
    let (status, _, text) = post(&server.url, "nfe=100", &body);
    assert_eq!(status, 504, "{}", String::from_utf8_lossy(&text));
    // The server is still up and answers a good request.
    let (status, _, png) = post(&server.url, "nfe=2", &body);
    assert_eq!(status, 200);
    assert!(png.starts_with(b"\x89PNG"));
    let (_, metrics) = get(&server.url, "/metrics");
    assert_eq!(
        metric(&metrics, "mrsampler_requests_total{outcome=\"timeout\"}"),
        1.0
    );
    assert_eq!(metric(&metrics, "mrsampler_running"), 0.0);
}

#[test]
fn a_full_queue_is_503_and_shutdown_finishes_the_running_requests() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.png");
    rgb(&file, 64, 48, 3);
    let body = std::fs::read(&file).unwrap();
    // One running request, one waiting: a third is refused.
    let server = Server::start(&["--max-batch", "1", "--queue", "1"]);
    let send = |seed: u32| {
        let (url, body) = (server.url.clone(), body.clone());
        std::thread::spawn(move || post(&url, &format!("nfe=60&seed={seed}"), &body))
    };
    let first = send(1);
    std::thread::sleep(Duration::from_millis(300));
    let second = send(2);
    std::thread::sleep(Duration::from_millis(300));
    let (status, retry, text) = post(&server.url, "nfe=60&seed=3", &body);
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&text));
    assert_eq!(retry.as_deref(), Some("1"));
    // SIGTERM now: both admitted requests are still answered, then the process exits cleanly.
    assert!(server.terminate());
    for thread in [first, second] {
        let (status, _, png) = thread.join().unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&png));
    }
}

#[test]
fn tiled_requests_share_calls_and_give_restores_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["p.png", "q.png", "r.png"];
    for (k, name) in names.iter().enumerate() {
        rgb(&dir.path().join(name), 56, 40, 10 + k as u32);
    }
    let files: Vec<String> = names
        .iter()
        .map(|n| dir.path().join(n).to_string_lossy().into_owned())
        .collect();
    let out = dir.path().join("restored");
    let out_arg = out.to_string_lossy().into_owned();
    let tiling = ["--tile", "32", "--overlap", "8", "--tile-batch", "2"];
    let mut args = vec!["restore", "--quiet", "--nfe", "4", "--out", &out_arg];
    args.extend(tiling);
    args.extend(files.iter().map(String::as_str));
    let (ok, text) = mrsampler(&args);
    assert!(ok, "{text}");
    let mut flags = vec!["--max-batch", "3", "--nfe", "4"];
    flags.extend(tiling);
    let server = Server::start(&flags);
    let threads: Vec<_> = names
        .iter()
        .zip(&files)
        .map(|(name, file)| {
            let (url, body) = (server.url.clone(), std::fs::read(file).unwrap());
            let query = format!("name={name}");
            std::thread::spawn(move || post(&url, &query, &body))
        })
        .collect();
    for (name, thread) in names.iter().zip(threads) {
        let (status, _, png) = thread.join().unwrap();
        assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&png));
        assert!(
            png == std::fs::read(out.join(name)).unwrap(),
            "{name} differs"
        );
    }
    let (_, metrics) = get(&server.url, "/metrics");
    let calls = metric(&metrics, "mrsampler_batch_size_count");
    assert_eq!(metric(&metrics, "mrsampler_batch_size_sum"), 12.0);
    assert!(calls < 12.0, "no call held two requests: {metrics}");
    assert!(server.terminate());
}

/// The value of the metric line that starts with `name`.
fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} not in {metrics}"))
}

#[test]
fn the_pixel_budget_bounds_what_runs_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.png");
    rgb(&file, 40, 32, 5);
    let body = std::fs::read(&file).unwrap();
    // 1280 pixels each against a budget of 1500: one request runs at a time, the others wait.
    let server = Server::start(&["--max-batch", "4", "--max-batch-pixels", "1500"]);
    let threads: Vec<_> = (0..3)
        .map(|seed| {
            let (url, body) = (server.url.clone(), body.clone());
            std::thread::spawn(move || post(&url, &format!("nfe=3&seed={seed}"), &body))
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap().0, 200);
    }
    let (_, metrics) = get(&server.url, "/metrics");
    assert_eq!(metric(&metrics, "mrsampler_batch_size_sum"), 9.0);
    assert_eq!(metric(&metrics, "mrsampler_batch_size_count"), 9.0);
}
