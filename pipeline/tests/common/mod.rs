//! Helpers the tests of the `quiver` binary share.

#![allow(dead_code)]

use arrow::compute::{concat_batches, lexsort_to_indices, take_record_batch, SortColumn};
use arrow::record_batch::RecordBatch;
use std::path::Path;
use std::process::{Command, Stdio};

pub mod memory;

/// A small deterministic generator (xorshift).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `quiver <command> <config> [flag value]... --no-progress`, with no crash point inherited,
/// no stdin and captured output.
pub fn quiver_command(command: &str, config: &Path, flags: &[(&str, &Path)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quiver"));
    cmd.arg(command).arg(config);
    for (flag, value) in flags {
        cmd.arg(flag).arg(value);
    }
    cmd.arg("--no-progress")
        .env_remove("QUIVER_CRASH_AT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// `output` of a command that must have succeeded (its stderr in the failure message).
pub fn succeed<O: std::borrow::Borrow<std::process::Output>>(output: O, what: &str) -> O {
    let out = output.borrow();
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    output
}

/// Rows of the Delta table at `table` (the files its log adds), sorted like `committed`, and
/// the `txn` versions of its commits.
pub fn delta_table(table: &Path) -> (RecordBatch, Vec<i64>) {
    delta_table_in(&quiver_store::StoreDir::local(table))
}

/// [`delta_table`] of a table in a store (local or on an object store).
pub fn delta_table_in(table: &quiver_store::StoreDir) -> (RecordBatch, Vec<i64>) {
    let mut batches = Vec::new();
    let mut txns = Vec::new();
    for v in quiver_store::delta::versions(table).unwrap() {
        for action in quiver_store::delta::read_commit(table, v).unwrap() {
            if let Some(path) = action.pointer("/add/path").and_then(|p| p.as_str()) {
                let (_, read) =
                    quiver_pipeline::parquet_file::read_store_file(table, path, "a table file")
                        .unwrap();
                batches.extend(read);
            }
            if let Some(t) = action.pointer("/txn/version").and_then(|t| t.as_i64()) {
                txns.push(t);
            }
        }
    }
    (sorted_rows(&batches), txns)
}

/// The tests' S3 server (moto, started by scripts/test.sh) and bucket, or `None` outside the
/// test command (under CI, where the test command always sets them, a missing server fails).
pub fn s3_server() -> Option<(String, String)> {
    match std::env::var("QUIVER_TEST_S3_ENDPOINT") {
        Ok(endpoint) => {
            let bucket =
                std::env::var("QUIVER_TEST_S3_BUCKET").unwrap_or_else(|_| "quiver-test".into());
            Some((endpoint, bucket))
        }
        Err(_) if std::env::var("CI").is_ok() => {
            panic!("QUIVER_TEST_S3_ENDPOINT is not set: run the tests with `bash scripts/test.sh`")
        }
        Err(_) => {
            eprintln!("skipping: QUIVER_TEST_S3_ENDPOINT not set (bash scripts/test.sh sets it)");
            None
        }
    }
}

/// `batches` as one batch sorted on the columns of `card_id`, `event_time` and `txn_id` it has.
pub fn sorted_rows(batches: &[RecordBatch]) -> RecordBatch {
    assert!(!batches.is_empty(), "no rows");
    let all = concat_batches(&batches[0].schema(), batches).unwrap();
    let sort: Vec<SortColumn> = ["card_id", "event_time", "txn_id"]
        .into_iter()
        .filter(|c| all.schema().index_of(c).is_ok())
        .map(|c| SortColumn {
            values: all.column_by_name(c).unwrap().clone(),
            options: None,
        })
        .collect();
    take_record_batch(&all, &lexsort_to_indices(&sort, None).unwrap()).unwrap()
}

/// The card view the crash and Kafka tests compute: counts, sums, a deviation and a maximum
/// over several windows, and a lifetime count.
pub const CARD_VIEW: &str = "SELECT card_id, event_time, txn_id,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS n_10m,
  sum(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS sum_1h,
  stddev_samp(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 day' PRECEDING AND CURRENT ROW) AS sd_1d,
  max(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '30 minutes' PRECEDING AND CURRENT ROW) AS max_30m,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time) AS n_lifetime
FROM transactions";

/// A `redis-server` on a free loopback port, without persistence, stopped when dropped.
pub struct RedisServer {
    child: std::process::Child,
    /// Its port.
    pub port: u16,
}

impl RedisServer {
    /// Starts one; `None` (the caller skips, saying why) when `redis-server` is not installed,
    /// unless `QUIVER_REQUIRE_REDIS` is set (the test command sets it and installs Redis).
    pub fn start() -> Option<Self> {
        Self::start_with(None)
    }

    /// [`RedisServer::start`], serving TLS only with the PEM certificate and key `tls`.
    pub fn start_with(tls: Option<(&Path, &Path)>) -> Option<Self> {
        Self::start_with_args(tls, &[])
    }

    /// [`RedisServer::start_with`], with more `redis-server` arguments.
    fn start_with_args(tls: Option<(&Path, &Path)>, extra: &[String]) -> Option<Self> {
        let port = free_port();
        let mut command = Command::new("redis-server");
        command.args(extra);
        match tls {
            None => command.args(["--port", &port.to_string()]),
            Some((cert, key)) => command
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .args(["--tls-auth-clients", "no"]),
        };
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) => {
                assert!(
                    std::env::var_os("QUIVER_REQUIRE_REDIS").is_none(),
                    "redis-server is required (scripts/test.sh installs it): {e}"
                );
                eprintln!(
                    "skipped: no redis-server on this machine ({e}); scripts/test.sh installs it"
                );
                return None;
            }
        };
        let server = RedisServer { child, port };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            // A TLS server is ready once it listens; a plain one answers PING.
            let ready = match tls {
                Some(_) => std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
                None => server.ping(),
            };
            if ready {
                return Some(server);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let mut answer = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG\r\n"
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Redis Cluster of three masters on loopback ports (no replicas, no persistence), stopped
/// when dropped.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts one, its slots spread over the three (`redis-cli --cluster create`); `None` as
    /// for [`RedisServer::start`].
    pub fn start() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let args: Vec<String> = [
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &free_port().to_string(),
                "--cluster-config-file",
                &format!("nodes-{i}.conf"),
                "--dir",
                dir.path().to_str().unwrap(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            nodes.push(RedisServer::start_with_args(None, &args)?);
        }
        let addresses: Vec<String> = (nodes.iter())
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli comes with redis-server");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let cluster = RedisCluster { nodes, _dir: dir };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !cluster.nodes.iter().all(|n| {
            let info = Command::new("redis-cli")
                .args(["-p", &n.port.to_string(), "cluster", "info"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok")
        }) {
            assert!(
                std::time::Instant::now() < deadline,
                "the cluster did not come up"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Some(cluster)
    }

    /// Its nodes' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
