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


TMP=$(mktemp -d /tmp/byok-profile.XXXXXX)
LOG_NAME=profile
# shellcheck source=benches/load/common.sh
. "$HERE/common.sh"
HZ=$(getconf CLK_TCK)

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

start_fake taskset -c 0
PROXY_PORT=$(free_port)
wrap=(taskset -c 0)
if [ "$CALLGRIND" = 1 ]; then
  command -v valgrind >/dev/null || die "valgrind missing (apt-get install valgrind)"
  wrap+=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$TMP/callgrind.out")
fi
BYOK_EXTRA=(BYOK_LIMITS__MAX_CONCURRENT_REQUESTS=4096)
start_byok "$PROXY_PORT" "${wrap[@]}"
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
