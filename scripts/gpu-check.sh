#!/usr/bin/env bash
# The GPU check: the CUDA backend on a real GPU, with binaries built on a machine without one.
#
#   bash scripts/gpu-check.sh build   # here: release binaries, stripped and compressed, into
#                                     # .gpu-carry/ (git-ignored; about 30 MiB)
#   bash scripts/gpu-check.sh run     # on the GPU machine, from the repository root
#
# `run` needs the NVIDIA driver, NVRTC (CUDA 13) and python3 (standard library only); no Rust.
# In order, each step only if the time budget (GPU_CHECK_BUDGET_S, default 450 s) allows:
#   1. the conformance suite with QUIVER_REQUIRE_CUDA=1 (a missing GPU fails, not skips);
#   2. the kernel benchmark, CPU vs CUDA backend, 10k to 100M rows (crossover, ratios, diffs);
#   3. backfill of the fraud demo at 10M and then 100M events, --device cpu vs --device cuda,
#      timed, with the two outputs compared feature by feature.
# GPU_CHECK_EVENTS overrides the backfill sizes (default "10000000 100000000").
# Everything goes to stdout and, when OUT is set, to $OUT/gpu-check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu-carry

build() {
  set -e
  mkdir -p "$CARRY"
  grep -qx "/$CARRY/" .git/info/exclude 2>/dev/null || echo "/$CARRY/" >> .git/info/exclude
  cargo build --release --locked -p quiver-pipeline
  cargo build --release --locked -p quiver-gpu --example kernel_bench
  local test_bin
  test_bin=$(cargo test --release --locked -p quiver-gpu --test conformance --no-run 2>&1 \
    | grep -o 'target/release/deps/conformance-[0-9a-f]*' | tail -1)
  strip -o "$CARRY/quiver" target/release/quiver
  strip -o "$CARRY/kernel_bench" target/release/examples/kernel_bench
  strip -o "$CARRY/conformance" "$test_bin"
  rm -f "$CARRY"/*.xz
  xz -T2 -6 "$CARRY/quiver" "$CARRY/kernel_bench" "$CARRY/conformance"
  ls -la "$CARRY"
}

run() {
  local budget=${GPU_CHECK_BUDGET_S:-450}
  local start=$SECONDS
  local bin=/tmp/quiver-gpu-check/bin work=/tmp/quiver-gpu-check/work
  rm -rf /tmp/quiver-gpu-check && mkdir -p "$bin" "$work"
  for f in quiver kernel_bench conformance; do
    xz -dc "$CARRY/$f.xz" > "$bin/$f" && chmod +x "$bin/$f"
  done
  left() { echo $((budget - (SECONDS - start))); }
  # Runs a command; prints its wall time and peak memory under a label.
  timed() {
    local label=$1; shift
    python3 -c 'import os, subprocess, sys, time
t = time.perf_counter(); p = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(p.pid, 0)
print(f"{sys.argv[1]}: {time.perf_counter() - t:.2f} s, peak {usage.ru_maxrss / 1024:.0f} MiB, exit {os.waitstatus_to_exitcode(status)}", flush=True)' "$label" "$@"
  }
  step() { echo; echo "== $* (at $((SECONDS - start)) s)"; }

  step "GPU and libraries"
  nvidia-smi -L
  # cudarc opens libcuda.so.1 and libnvrtc.so.13 by name: make sure the loader finds them.
  for lib in libcuda.so.1 libnvrtc.so.13; do
    if ! ldconfig -p | grep -q "$lib"; then
      local found
      found=$(find /usr/local /opt /usr/lib -name "$lib*" 2>/dev/null | head -1)
      [ -n "$found" ] && export LD_LIBRARY_PATH="$(dirname "$found"):${LD_LIBRARY_PATH:-}"
      echo "$lib: ${found:-not found} (not in the loader cache)"
    fi
  done

  step "conformance suite (QUIVER_REQUIRE_CUDA=1)"
  QUIVER_REQUIRE_CUDA=1 "$bin/conformance" --nocapture --test-threads 1 || echo "CONFORMANCE FAILED"

  step "kernel benchmark"
  local sizes=10000,100000,300000,1000000,3000000,10000000
  [ "$(left)" -gt 300 ] && sizes=$sizes,100000000
  timeout $(( $(left) > 30 ? $(left) - 30 : 1 )) "$bin/kernel_bench" "$sizes"

  for events in ${GPU_CHECK_EVENTS:-10000000 100000000}; do
    # About 28 s per 10M events for generating and both backfills.
    if [ "$(left)" -lt $(( events / 10000000 * 28 + 20 )) ]; then
      step "backfill at $events events: skipped, $(left) s of the budget left"
      continue
    fi
    step "backfill at $events events: generate"
    local data=$work/tx-$events.parquet
    # 30 days of event time (the issue's 100M shape: 1M cards over 30 days), so the events
    # end before today and none is dead-lettered as future.
    timed generate "$bin/quiver" generate --events "$events" \
      --from configs/fraud-demo.yaml --cards $((events / 100)) \
      --events-per-second $((events / 2592000 + 1)) --out "$data"
    for device in cpu cuda; do
      step "backfill at $events events on $device"
      timed "backfill $device" "$bin/quiver" backfill \
        configs/fraud-demo.yaml --input "$data" --device "$device" --no-progress \
        --output "$work/out-$events-$device"
    done
    step "backfill at $events events: cpu vs cuda outputs"
    "$bin/quiver" compare "$work/out-$events-cpu" "$work/out-$events-cuda" || echo "OUTPUTS DIFFER"
    rm -rf "$work/out-$events-cpu" "$work/out-$events-cuda" "$data"
  done
  step "done"
}

case "${1:-}" in
  build) build ;;
  run)
    if [ -n "${OUT:-}" ]; then run 2>&1 | tee "$OUT/gpu-check.log"; else run; fi ;;
  *) echo "usage: $0 build | run" >&2; exit 2 ;;
esac
