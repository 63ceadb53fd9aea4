//! `quiver run --serve` and `quiver serve` as a client meets them: features over HTTP with
//! bearer tokens and roles, 401/403 with audit entries and no token in any output, metrics,
//! readiness, and the status page as headless Chromium renders it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;
use common::{succeed, Rng};

const READER_TOKEN: &str = "qv_reader_secret_0123456789";
const ADMIN_TOKEN: &str = "qv_admin_secret_9876543210";
const MINUTE_MS: i64 = 60_000;
const BASE_MS: i64 = 1_767_225_600_000;

const VIEW: &str = "SELECT card_id, event_time,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS n_10m,
  sum(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS sum_1h,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time) AS n_lifetime
FROM transactions";

fn hash(token: &str) -> String {
    use quiver_pipeline::serve::auth::sha256;
    hex::encode(sha256(token.as_bytes()))
}

/// Writes events and a config (with tokens when `tokens`); returns the config and the last
/// event time (ms).
fn write_pipeline(dir: &Path, name: &str, tokens: bool) -> (PathBuf, i64) {
    let mut rng = Rng(0xA076_1D64_78BD_642F);
    let mut lines = Vec::new();
    let mut last = 0;
    for i in 0..600 {
        let t = BASE_MS + i * 7_000 + rng.below(5_000) as i64;
        last = last.max(t);
        lines.push(format!(
            "{{\"card_id\": \"c{}\", \"amount\": {}, \"event_time\": {t}}}",
            rng.below(12),
            rng.below(1000)
        ));
    }
    std::fs::write(dir.join("events.ndjson"), lines.join("\n") + "\n").unwrap();
    std::fs::write(dir.join("view.sql"), VIEW).unwrap();
    let serve = if tokens {
        format!(
            "serve:
  tokens:
    - {{name: fraud-service, role: reader, sha256: {}}}
    - {{name: ops, role: admin, sha256_env: QUIVER_TEST_ADMIN_SHA}}
",
            hash(READER_TOKEN)
        )
    } else {
        String::new()
    };
    let config = format!(
        "name: {name}
source:
  name: transactions
  files:
    location: {}
    format: ndjson
    schema:
      - {{name: card_id, type: string}}
      - {{name: amount, type: float}}
      - {{name: event_time, type: timestamp, nullable: false}}
event_time:
  column: event_time
  max_lateness: 10s
views:
  - name: cards
    file: view.sql
    freshness_sla: 1h
store: {}
{serve}",
        dir.join("events.ndjson").display(),
        dir.join("store").display()
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, config).unwrap();
    (path, last)
}

/// A server process, killed if the test fails first; its output lines arrive on `lines`.
struct Served {
    child: Child,
    addr: String,
    lines: mpsc::Receiver<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `quiver <args>` and waits for the address it announces.
fn start(args: &[&str]) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(args)
        .env("QUIVER_TEST_ADMIN_SHA", hash(ADMIN_TOKEN))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    // Owned before anything can fail, so a failing test still kills the process.
    let mut served = Served {
        child,
        addr: String::new(),
        lines,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let line = served
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no `serving on` line; output: {seen:#?}"));
        let announced = (line.strip_prefix("serving on http://"))
            .or_else(|| line.strip_prefix("serving on https://"));
        if let Some(rest) = announced {
            served.addr = rest.split_whitespace().next().unwrap().to_string();
            return served;
        }
        seen.push(line);
    }
}

/// `quiver run` of `config` into `out`, then `quiver serve` of its online store on a free
/// loopback port.
fn run_then_serve(config: &Path, out: &Path) -> Served {
    let ran = common::quiver_command("run", config, &[("--output", out)])
        .output()
        .unwrap();
    succeed(&ran, "quiver run");
    let online = out.join("online.redb");
    start(&[
        "serve",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--online",
        online.to_str().unwrap(),
    ])
}

/// One HTTP/1.1 request; the status, the headers (lower-cased) and the body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_lowercase(), body.to_string())
}

fn wait_ready(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, _, body) = http(addr, "GET", "/readyz", None, "");
        if status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn terminate(mut served: Served) -> Vec<String> {
    unsafe { libc::kill(served.child.id() as i32, libc::SIGTERM) };
    let status = served.child.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM stops the server cleanly: {status}"
    );
    std::thread::sleep(Duration::from_millis(100));
    served.lines.try_iter().collect()
}

#[test]
fn features_over_http_with_tokens_roles_audit_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (config, last) = write_pipeline(dir.path(), "served", true);
    let out = dir.path().join("out");
    let config_arg = config.to_str().unwrap();
    let served = start(&[
        "run",
        config_arg,
        "--output",
        out.to_str().unwrap(),
        "--no-progress",
        "--serve",
        "127.0.0.1:0",
    ]);
    let addr = served.addr.clone();
    wait_ready(&addr);

    let at = quiver_pipeline::lineage::format_micros((last + 3 * MINUTE_MS) * 1000);
    let request = format!(
        "{{\"view\": \"cards\", \"entities\": [\"c1\", {{\"card_id\": \"c2\"}}, [\"nobody\"]], \"at\": \"{at}\"}}"
    );
    // Who may do what.
    let (status, head, _) = http(&addr, "POST", "/v1/features", None, &request);
    assert_eq!(status, 401);
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    let (status, _, _) = http(&addr, "POST", "/v1/features", Some("qv_wrong"), &request);
    assert_eq!(status, 401);
    let (status, _, body) = http(&addr, "GET", "/v1/audit", Some(READER_TOKEN), "");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("needs admin"), "{body}");

    // Features.
    let (status, _, body) = http(&addr, "POST", "/v1/features", Some(READER_TOKEN), &request);
    assert_eq!(status, 200, "{body}");
    let served_values: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rows = served_values["features"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1]["card_id"], "c2");
    assert_eq!(
        (rows[2]["n_10m"].as_i64(), rows[2]["sum_1h"].is_null()),
        (Some(0), true)
    );
    assert!(rows[0]["n_lifetime"].as_i64().unwrap() > 10, "{body}");
    assert_eq!(served_values["at"], at);
    assert!(served_values["epoch"].as_u64().unwrap() >= 1);
    // Read again: from the state cache when the epoch is the same, with the same answer.
    let (status, _, again) = http(&addr, "POST", "/v1/features", Some(READER_TOKEN), &request);
    assert_eq!(status, 200, "{again}");
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    if again["epoch"] == served_values["epoch"] {
        assert_eq!(again["features"], served_values["features"]);
    }

    // Mistakes are named, with the right status.
    for (body, status, says) in [
        (
            "{\"view\": \"nope\", \"entities\": [1]}",
            404,
            "no view `nope`",
        ),
        ("{\"view\": \"cards\", \"entities\": [1]", 400, "not JSON"),
        (
            "{\"view\": \"cards\", \"entities\": [\"c1\"], \"features\": [\"bogus\"]}",
            400,
            "no online feature `bogus`",
        ),
        (
            "{\"view\": \"cards\", \"entities\": [\"c1\"], \"at\": \"2020-01-01T00:00:00Z\"}",
            400,
            "before the online store's watermark",
        ),
        (
            "{\"view\": \"cards\", \"entities\": [\"c1\"], \"bogus\": 1}",
            400,
            "unknown field `bogus`",
        ),
    ] {
        let (got, _, text) = http(&addr, "POST", "/v1/features", Some(READER_TOKEN), body);
        assert_eq!(got, status, "{body}: {text}");
        assert!(text.contains(says), "{body}: {text}");
    }

    // Views, metrics, the audit log.
    let (status, _, body) = http(&addr, "GET", "/v1/views", Some(READER_TOKEN), "");
    assert_eq!(status, 200);
    assert!(
        body.contains("\"view\":\"cards\"") && body.contains("\"entities\":12"),
        "{body}"
    );
    let (status, _, metrics) = http(&addr, "GET", "/metrics", Some(READER_TOKEN), "");
    assert_eq!(status, 200);
    for line in [
        "quiver_http_requests_total{endpoint=\"/v1/features\",status=\"200\"} 2",
        "quiver_http_requests_total{endpoint=\"/v1/features\",status=\"401\"} 2",
        "quiver_http_request_duration_seconds_count{endpoint=\"/v1/features\"}",
        "quiver_online_keys{view=\"cards\"",
        "quiver_online_freshness_seconds{view=\"cards\"",
        "quiver_online_entities_read_total 6",
        "quiver_online_state_cache_reads_total{result=\"hit\"}",
        // The run serving it is in the same process: its figures too.
        "quiver_run_events_total 600",
        "quiver_run_rows_total{view=\"cards\"} 600",
        "quiver_run_checkpoint_duration_seconds",
    ] {
        assert!(metrics.contains(line), "missing {line}:\n{metrics}");
    }
    // verify-online over HTTP needs a writer; without registered views it says what to do.
    let verify = "{\"view\": \"cards\"}";
    let (status, _, _) = http(&addr, "POST", "/v1/verify", Some(READER_TOKEN), verify);
    assert_eq!(status, 403);
    let (status, _, body) = http(&addr, "POST", "/v1/verify", Some(ADMIN_TOKEN), verify);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("quiver apply"), "{body}");
    let (status, _, audit) = http(&addr, "GET", "/v1/audit", Some(ADMIN_TOKEN), "");
    assert_eq!(status, 200, "{audit}");
    let entries: serde_json::Value = serde_json::from_str(&audit).unwrap();
    let denied: Vec<(&str, &str)> = entries["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "denied")
        .map(|e| (e["who"].as_str().unwrap(), e["what"].as_str().unwrap()))
        .collect();
    assert_eq!(
        denied,
        vec![
            ("anonymous", "POST /v1/features"),
            ("unknown token", "POST /v1/features"),
            ("fraud-service", "GET /v1/audit"),
            ("fraud-service", "POST /v1/verify"),
        ]
    );
    assert!(
        entries["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["who"] == "ops"
                && e["what"] == "POST /v1/verify"
                && e["outcome"] == "failed"),
        "{audit}"
    );

    // Stopped, nothing it printed or logged holds a token.
    let printed = terminate(served).join("\n");
    let logged = std::fs::read_to_string(dir.path().join("store/_audit.ndjson")).unwrap();
    for text in [&printed, &logged, &audit] {
        for token in [READER_TOKEN, ADMIN_TOKEN, "qv_wrong"] {
            assert!(!text.contains(token), "a token leaked: {text}");
        }
    }
    // `quiver get` reads the same values from the store the server used.
    let output = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args([
            "get", config_arg, "cards", "c1", "c2", "nobody", "--json", "--at", &at,
        ])
        .arg("--online")
        .arg(out.join("online.redb"))
        .output()
        .unwrap();
    succeed(&output, "the command");
    let got: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(got["features"], served_values["features"]);
    // And `quiver audit` shows the refusals.
    let output = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["audit", "--store"])
        .arg(dir.path().join("store"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(text.matches("denied").count(), 4, "{text}");
}

#[test]
fn without_tokens_the_server_stays_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = write_pipeline(dir.path(), "open", false);
    let output = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args([
            "serve",
            config.to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
            "--online",
        ])
        .arg(dir.path().join("online.redb"))
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && e.contains("without tokens"),
        "{e}"
    );
}

#[test]
fn the_status_page_shows_views_freshness_and_sla_in_a_browser() {
    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
    else {
        assert!(
            std::env::var_os("QUIVER_REQUIRE_CHROMIUM").is_none(),
            "chromium is required (scripts/test.sh installs it)"
        );
        eprintln!("skipped: no chromium on this machine (scripts/test.sh installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = write_pipeline(dir.path(), "paged", false);
    let served = run_then_serve(&config, &dir.path().join("out"));
    wait_ready(&served.addr);
    let profile = dir.path().join("chromium-profile");
    let page = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("http://{}/", served.addr))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&page.stdout);
    assert!(dom.contains("<h1>Quiver: paged</h1>"), "{dom}");
    // The view's row: name, 12 entities online, and (data from 2026-01-01) a missed 1 h SLA.
    let row = dom
        .split("<tr class=\"view\">")
        .nth(1)
        .unwrap_or_else(|| panic!("no view row: {dom}"));
    let row = row.split("</tr>").next().unwrap();
    assert!(
        row.contains("<td>cards</td>") && row.contains("<td>12</td>"),
        "{row}"
    );
    assert!(row.contains("missed (1.0 h)"), "{row}");
    assert!(row.contains("n_10m, sum_1h, n_lifetime"), "{row}");
    terminate(served);
}

#[test]
fn tls_serves_https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = write_pipeline(dir.path(), "secure", false);
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (scripts/test.sh installs it)");
    succeed(&made, "openssl");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "serve:\n  tls: {{cert: {}, key: {}}}\n",
        cert.display(),
        key.display()
    ));
    std::fs::write(&config, text).unwrap();
    let served = run_then_serve(&config, &dir.path().join("out"));
    let curl = |extra: &[&str], path: &str| {
        Command::new("curl")
            .args(["-s", "--max-time", "10"])
            .args(extra)
            .arg(format!("https://{}{path}", served.addr))
            .output()
            .expect("curl (scripts/test.sh installs it)")
    };
    let ok = curl(&["--cacert", cert.to_str().unwrap()], "/healthz");
    succeed(&ok, "curl");
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "ok\n");
    let untrusted = curl(&[], "/healthz");
    assert!(
        !untrusted.status.success(),
        "an unknown certificate is refused by the client"
    );
    // Plain HTTP to the TLS port gets no answer, and the server keeps serving.
    let mut plain = TcpStream::connect(&served.addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    write!(
        plain,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "plain HTTP was served"
    );
    let again = curl(&["--cacert", cert.to_str().unwrap()], "/readyz");
    assert_eq!(String::from_utf8_lossy(&again.stdout), "ready\n");
    terminate(served);
}
