#!/usr/bin/env bash
# Where byok-proxy spends its CPU under one load cell: starts the bench fake gateway and
# byok-proxy (release build, gateway mode, a real user, token and key: everything on, as in
# run.sh), pins both to CPU 0 and the load generator to CPU 1, and measures one cell three
# ways:
#   - CPU µs per request of byok-proxy (its utime+stime over the requests wrk completed),
#   - a `perf record -g` sampling profile (software cpu-clock: works in VMs without PMU),
#     top entries by self time written to target/profile-<mode>.txt,
#   - CALLGRIND=1: instructions per request under valgrind (reproducible on a noisy machine;
#     `count.py` sends exactly N requests).
#
# usage:  benches/load/profile.sh [json|sse|sse20] [conns]
# knobs:  DURATION=5 (seconds of perf record), BUILD=1, CALLGRIND=0, CALLGRIND_N=2000
# Only 127.0.0.1 is targeted; every process started here is stopped on exit, by PID.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/benches/load"
MODE=${1:-sse20}
CONNS=${2:-32}
DURATION=${DURATION:-5}
BUILD=${BUILD:-1}
CALLGRIND=${CALLGRIND:-0}
CALLGRIND_N=${CALLGRIND_N:-2000}

log() { printf '[profile %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case $MODE in
  json) WRK_MODE=json QUERY="" ;;
  sse) WRK_MODE=sse QUERY="" ;;
  sse20) WRK_MODE=sse QUERY="?chunks=20" ;;
  *) die "mode must be json, sse or sse20" ;;
esac

command -v wrk >/dev/null || die "wrk missing (apt-get install wrk)"
command -v perf >/dev/null || die "perf missing (apt-get install linux-perf)"
if [ "$BUILD" = 1 ]; then
  (cd "$ROOT" && cargo build --release --bin byok-proxy --example fake-upstream)
fi
PROXY_BIN=${PROXY_BIN:-"$ROOT/target/release/byok-proxy"}
FAKE_BIN="$ROOT/target/release/examples/fake-upstream"

TMP=$(mktemp -d /tmp/byok-profile.XXXXXX)
PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do
      case $(ps -o stat= -p "$pid" 2>/dev/null) in "" | Z*) break ;; esac
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$TMP"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
wait_port() {
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  die "$2 did not listen on 127.0.0.1:$1"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)

taskset -c 0 "$FAKE_BIN" --threads 1 >"$TMP/fake.port" 2>"$TMP/fake.log" &
PIDS+=($!)
for _ in $(seq 1 100); do [ -s "$TMP/fake.port" ] && break; sleep 0.05; done
FAKE_PORT=$(head -n1 "$TMP/fake.port")
wait_port "$FAKE_PORT" "fake upstream"

PROXY_PORT=$(free_port)
mkdir -p "$TMP/proxy"
proxy_env=(
  env -C "$TMP/proxy"
  BYOK_MASTER_KEY="$("$PROXY_BIN" key generate)"
  BYOK_ADMIN_TOKEN="bench-admin-$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
  BYOK_LISTEN="127.0.0.1:$PROXY_PORT"
  BYOK_UPSTREAM__GATEWAY__BASE_URL="http://127.0.0.1:$FAKE_PORT/v1"
  AI_GATEWAY_API_KEY=gw-bench
  BYOK_LOG__LEVEL=warn
  BYOK_LIMITS__REQUESTS_PER_MINUTE=1000000000
  BYOK_LIMITS__BURST=1000000000
  BYOK_LIMITS__MAX_CONCURRENT_REQUESTS=4096
)
"${proxy_env[@]}" "$PROXY_BIN" user create --name bench >"$TMP/setup.log" 2>&1
BENCH_TOKEN=$("${proxy_env[@]}" "$PROXY_BIN" token create --user bench --name load 2>>"$TMP/setup.log")
export BENCH_TOKEN
cmd=("${proxy_env[@]}" taskset -c 0)
if [ "$CALLGRIND" = 1 ]; then
  command -v valgrind >/dev/null || die "valgrind missing (apt-get install valgrind)"
  cmd+=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$TMP/callgrind.out")
fi
"${cmd[@]}" "$PROXY_BIN" serve >"$TMP/proxy.log" 2>&1 &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
wait_port "$PROXY_PORT" "byok-proxy"
status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PROXY_PORT/api/keys" \
  -H "Authorization: Bearer $BENCH_TOKEN" -H 'content-type: application/json' \
  -d '{"provider":"openai","credentials":{"apiKey":"sk-bench-0123456789abcdefghijklmnopqrstuvwxyz"},"label":"load"}')
[ "$status" = 201 ] || die "POST /api/keys answered $status"
URL="http://127.0.0.1:$PROXY_PORT/v1/chat/completions$QUERY"

if [ "$CALLGRIND" = 1 ]; then
  python3 "$HERE/count.py" "$URL" --mode "$WRK_MODE" --conns "$CONNS" -n 200 >/dev/null
  callgrind_control -z "$PROXY_PID" >/dev/null 2>&1
  callgrind_control -i on "$PROXY_PID" >/dev/null 2>&1
  python3 "$HERE/count.py" "$URL" --mode "$WRK_MODE" --conns "$CONNS" -n "$CALLGRIND_N"
  callgrind_control -d "$PROXY_PID" >/dev/null 2>&1
  callgrind_control -i off "$PROXY_PID" >/dev/null 2>&1
  sleep 1
  dump=$(ls "$TMP"/callgrind.out.* 2>/dev/null | head -n1)
  [ -n "$dump" ] || die "callgrind wrote no dump"
  total=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
  echo "CALLGRIND mode=$MODE conns=$CONNS requests=$CALLGRIND_N instructions=$total per_request=$((total / CALLGRIND_N))"
  mkdir -p "$ROOT/target"
  cp "$dump" "$ROOT/target/callgrind-$MODE.out"
  callgrind_annotate --inclusive=no "$dump" 2>/dev/null | head -n 60 \
    >"$ROOT/target/callgrind-$MODE.txt" || true
  log "top functions by instructions: target/callgrind-$MODE.txt (callgrind_annotate target/callgrind-$MODE.out for more)"
  exit 0
fi

taskset -c 1 wrk -t1 -c"$CONNS" -d2s -s "$HERE/chat.lua" "$URL" -- "$WRK_MODE" >/dev/null 2>&1 || true
t0=$(cpu_ticks "$PROXY_PID")
taskset -c 1 wrk -t1 -c"$CONNS" -d"$((DURATION + 1))s" -s "$HERE/chat.lua" "$URL" -- "$WRK_MODE" \
  >"$TMP/wrk.txt" 2>&1 &
WRK_PID=$!
perf record -F 999 -g -o "$TMP/perf.data" -p "$PROXY_PID" -- sleep "$DURATION" 2>"$TMP/perf.log" >/dev/null
wait "$WRK_PID" || true
t1=$(cpu_ticks "$PROXY_PID")
line=$(grep '^WRKRESULT' "$TMP/wrk.txt" || true)
requests=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$line")
rps=$(sed -n 's/.* rps=\([0-9.]*\).*/\1/p' <<<"$line")
non2xx=$(sed -n 's/.*non2xx=\([0-9]*\).*/\1/p' <<<"$line")
us=$(awk -v t=$((t1 - t0)) -v hz="$HZ" -v n="${requests:-1}" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
echo "PROFILE mode=$MODE conns=$CONNS requests=$requests rps=$rps non2xx=$non2xx cpu_us_per_req=$us load=$(cut -d' ' -f1 /proc/loadavg)"
mkdir -p "$ROOT/target"
perf report -i "$TMP/perf.data" --no-children --sort symbol --percent-limit 0.7 --stdio 2>/dev/null | sed "s/ *-  *- *$//" \
  | grep -E '^ +[0-9.]+%' | head -n 40 >"$ROOT/target/profile-$MODE.txt" || true
head -n 25 "$ROOT/target/profile-$MODE.txt"
log "full list: target/profile-$MODE.txt"

# syscalls per request: strace counts them over exactly SYSCALL_N requests
if [ "${SYSCALLS:-1}" = 1 ] && command -v strace >/dev/null; then
  n=${SYSCALL_N:-2000}
  strace -f -c -o "$TMP/strace.txt" -p "$PROXY_PID" 2>/dev/null &
  STRACE_PID=$!
  sleep 1
  taskset -c 1 python3 "$HERE/count.py" "$URL" --mode "$WRK_MODE" --conns "$CONNS" -n "$n" >/dev/null
  kill -INT "$STRACE_PID" 2>/dev/null || true
  wait "$STRACE_PID" 2>/dev/null || true
  awk -v n="$n" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" {printf "  %-16s %6.2f per request\n", $NF, $4 / n}' "$TMP/strace.txt" \
    | sort -k2 -nr | head -n 8
  awk -v n="$n" '$NF == "total" {printf "SYSCALLS per request: %.2f\n", $4 / n}' "$TMP/strace.txt"
fi
