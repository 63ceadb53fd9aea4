#!/usr/bin/env bash
# The test command (README): formats, lints and tests the whole workspace on a fresh machine.
# It starts what the tests need on loopback ports and stops it afterwards:
#   - an S3-compatible object store (moto's server, pip-installed once into ~/.cache/quiver-test);
#   - Polars and delta-rs in the same virtual environment, to read the store's Delta tables;
#   - an Apache Kafka broker (scripts/kafka.sh: KRaft, jars from Maven Central, cached);
#   - redis-server and headless Chromium (Debian packages, installed once): the tests start
#     their own Redis servers, and load the status page in the browser.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
CACHE="${QUIVER_TEST_CACHE:-$HOME/.cache/quiver-test}"
mkdir -p "$CACHE"

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found; install Rust from https://rustup.rs" >&2
  exit 1
fi

# --- S3-compatible object store (moto) ---------------------------------------------------
if [ ! -x "$CACHE/venv/bin/moto_server" ]; then
  echo "test.sh: installing moto[server] into $CACHE/venv (once)"
  python3 -m venv "$CACHE/venv"
  "$CACHE/venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]'
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$CACHE/venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$CACHE/moto.log" 2>&1 &
moto_pid=$!
KAFKA_DIR="$CACHE/kafka-test-broker"
trap 'kill $moto_pid 2>/dev/null || true; bash scripts/kafka.sh stop "$KAFKA_DIR" || true' EXIT
deadline=$((SECONDS + 60))
until python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" 2>/dev/null; do
  if [ $SECONDS -ge $deadline ] || ! kill -0 $moto_pid 2>/dev/null; then
    echo "error: the S3 test server did not start; see $CACHE/moto.log" >&2
    exit 1
  fi
  sleep 0.5
done
export QUIVER_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
# The tests' bucket (each test writes under its own prefix); boto3 comes with moto.
export QUIVER_TEST_S3_BUCKET=quiver-test
"$CACHE/venv/bin/python" -c "import boto3; boto3.client('s3', endpoint_url='$QUIVER_TEST_S3_ENDPOINT', aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1').create_bucket(Bucket='$QUIVER_TEST_S3_BUCKET')"

# --- an independent Delta Lake reader (delta-rs through Polars) ------------------------------
if ! "$CACHE/venv/bin/python" -c "import polars, deltalake" 2>/dev/null; then
  echo "test.sh: installing polars and deltalake into $CACHE/venv (once)"
  "$CACHE/venv/bin/pip" install --quiet --disable-pip-version-check polars deltalake
fi
export QUIVER_TEST_PYTHON="$CACHE/venv/bin/python"

# --- Redis (the online store's second backend) and a real browser (the status page) -------
# Debian packages, installed once; the tests start their own redis-server on loopback ports
# (one, and a three-node Redis Cluster).
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)   # creates the test cluster
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)   # a certificate for the TLS test
command -v curl >/dev/null 2>&1 || missing+=(curl)         # an HTTPS client for it
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing ${missing[*]} (Debian packages, once)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "error: the tests need ${missing[*]}; install them (apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi
export QUIVER_REQUIRE_REDIS=1 QUIVER_REQUIRE_CHROMIUM=1

# --- a Kafka broker ----------------------------------------------------------------------
bash scripts/kafka.sh stop "$KAFKA_DIR" || true
QUIVER_TEST_KAFKA=$(bash scripts/kafka.sh start "$KAFKA_DIR")
export QUIVER_TEST_KAFKA

# --- checks and tests -------------------------------------------------------------------
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
