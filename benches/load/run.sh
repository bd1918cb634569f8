#!/usr/bin/env bash
# Load benchmark: the same fake gateway (benches/load/fake_upstream.rs) reached three ways, in
# one run:
#   direct   - wrk -> fake upstream
#   nginx    - wrk -> nginx (proxy_buffering off, HTTP/1.1 + keepalive to upstream) -> fake
#   byok     - wrk -> byok-proxy (release, gateway mode, real user/token/openai key: auth,
#              credential lookup and BYOK body rewrite all happen) -> fake
# For each path: RPS, latency p50/p99 and the CPU each server process spent per request (per
# stream for SSE) at 1 and 32 connections, for JSON answers, 5-event SSE streams and 20-event
# SSE streams (sse20), all with no delay between events (POST /v1/chat/completions, ~1 KB
# body, see chat.lua), the latency added vs direct, and the SSE time to first byte / first
# event over sequential keep-alive requests whose events come 20 ms apart (ttfb.py).
#
# usage:  benches/load/run.sh
# knobs (environment): DURATION=5s WARMUP=2s ROUNDS=3 CONNS="1 32" MODES="json sse sse20"
#                      TTFB_N=100 TTFB_QUERY="chunks=5&delay_ms=20" PIN=1 BUILD=1
#   PROXY_BIN=path: another build of byok-proxy (to compare builds in the same conditions).
#   Every cell (path x body x connections) runs ROUNDS times, interleaved; the report shows
#   the median (and the RPS range), so a burst of other load on the machine moves one round,
#   not the result. Each run's share of CPU taken by other processes is measured and flagged.
#   PIN=1: the load generators (wrk, ttfb.py) run on CPU 1, everything server-side (fake
#          upstream, nginx, byok-proxy) on CPU 0: each path gets the same single core for the
#          fake plus whatever sits in front of it, so the RPS drop vs direct is the price of the
#          middle box, and the load generator never competes with it. nginx runs 1 worker,
#          the fake 1 tokio worker, byok-proxy sizes its runtime to its affinity (1 worker).
#          PIN=0: no pinning.
#   BUILD=0: skip `cargo build --release` (binaries must exist).
# On a VM, an idle vCPU takes milliseconds to wake: at 1 connection that shows as a ~2-4 ms
# p99 on every path, direct included (the report says so when it sees it); compare p50s there.
# Keeping the vCPUs busy with SCHED_IDLE spinners removes it, but on this VM it also stalled
# disk I/O (byok-proxy's SQLite usage writer sat in D state and dropped usage records), so the
# script does not do that.
# Output: a Markdown report on stdout and in target/load-report.md; logs of the run in
# target/load-logs/. Only 127.0.0.1 is ever targeted. Everything this script starts (fake
# upstream, its own nginx with its own config/pid/logs in a temp dir, byok-proxy) is stopped
# on exit, by PID; the system nginx service is never touched.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/benches/load"
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-"1 32"}
TTFB_N=${TTFB_N:-100}
TTFB_QUERY=${TTFB_QUERY:-"chunks=5&delay_ms=20"}
MODES=${MODES:-"json sse sse20"}
ROUNDS=${ROUNDS:-3}
PIN=${PIN:-1}
BUILD=${BUILD:-1}
INVOCATION="DURATION=$DURATION WARMUP=$WARMUP ROUNDS=$ROUNDS CONNS=\"$CONNS\" MODES=\"$MODES\" TTFB_N=$TTFB_N PIN=$PIN BUILD=$BUILD benches/load/run.sh"

log() { printf '[load %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- tools
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
command -v taskset >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]} (Debian packages)"
  # policy-rc.d keeps the package from starting the system nginx service where it exists
  # already; where it does not, we add one only for this install and remove it after.
  added_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    added_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  [ "$added_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then
  SRV=(taskset -c 0)   # fake upstream, nginx, byok-proxy
  GEN=(taskset -c 1)   # wrk, ttfb.py
  PINNING="load generators (wrk -t1, ttfb.py) on CPU 1; fake upstream (1 tokio worker), nginx (1 worker) and byok-proxy (tokio sizes itself to its affinity: 1 worker) on CPU 0"
else
  SRV=(); GEN=()
  PINNING="none"
fi

# ---------------------------------------------------------------- build
if [ "$BUILD" = 1 ]; then
  log "cargo build --release --bin byok-proxy --example fake-upstream"
  (cd "$ROOT" && cargo build --release --bin byok-proxy --example fake-upstream)
fi
PROXY_BIN=${PROXY_BIN:-"$ROOT/target/release/byok-proxy"}
FAKE_BIN="$ROOT/target/release/examples/fake-upstream"
[ -x "$PROXY_BIN" ] || die "$PROXY_BIN missing (run with BUILD=1)"
[ -x "$FAKE_BIN" ] || die "$FAKE_BIN missing (run with BUILD=1)"

# ---------------------------------------------------------------- processes we start
TMP=$(mktemp -d /tmp/byok-load.XXXXXX)
PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    # up to 5 s for a clean exit (an exited child stays a zombie until waited for: state Z)
    for _ in $(seq 1 50); do
      case $(ps -o stat= -p "$pid" 2>/dev/null) in "" | Z*) break ;; esac
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$ROOT/target/load-logs" && mkdir -p "$ROOT/target/load-logs"
  cp "$TMP"/*.log "$TMP"/*.tsv "$ROOT/target/load-logs/" 2>/dev/null || true
  cp "$TMP"/nginx/*.log "$ROOT/target/load-logs/" 2>/dev/null || true
  rm -rf "$TMP"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
wait_port() { # port, what
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  die "$2 did not listen on 127.0.0.1:$1"
}
# CPU ticks (USER_HZ): the whole machine busy, and ours (this shell's waited-for descendants,
# i.e. every wrk / ttfb.py run, plus the still-running servers). The difference is what other
# processes (a concurrent cargo build, ...) took while we measured.
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
our_ticks() {
  local t pid
  t=$(awk '{print $16 + $17}' "/proc/$$/stat")
  for pid in "$@"; do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)

# 1. fake upstream
log "starting fake upstream"
"${SRV[@]}" "$FAKE_BIN" --threads 1 >"$TMP/fake.port" 2>"$TMP/fake.log" &
FAKE_PID=$!
PIDS+=("$FAKE_PID")
for _ in $(seq 1 100); do [ -s "$TMP/fake.port" ] && break; sleep 0.05; done
FAKE_PORT=$(head -n1 "$TMP/fake.port")
[ -n "$FAKE_PORT" ] || die "fake upstream printed no port (see $TMP/fake.log)"
wait_port "$FAKE_PORT" "fake upstream"

# 2. our own nginx: own prefix, config, pid file and logs; foreground master (daemon off).
NGINX_PORT=$(free_port)
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx/client_body;
  proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  upstream fake {
    server 127.0.0.1:$FAKE_PORT;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://fake;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
EOF
log "starting nginx on 127.0.0.1:$NGINX_PORT"
"${SRV[@]}" "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/nginx-error.log" \
  >"$TMP/nginx-stdout.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_port "$NGINX_PORT" "nginx"

# 3. byok-proxy: temp cwd (SQLite under ./data), real user, token and openai key.
PROXY_PORT=$(free_port)
mkdir -p "$TMP/proxy"
MASTER_KEY=$("$PROXY_BIN" key generate)
ADMIN_TOKEN="bench-admin-$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
proxy_env=(
  env -C "$TMP/proxy"
  BYOK_MASTER_KEY="$MASTER_KEY"
  BYOK_ADMIN_TOKEN="$ADMIN_TOKEN"
  BYOK_LISTEN="127.0.0.1:$PROXY_PORT"
  BYOK_UPSTREAM__GATEWAY__BASE_URL="http://127.0.0.1:$FAKE_PORT/v1"
  AI_GATEWAY_API_KEY=gw-bench
  BYOK_LOG__LEVEL=warn
  BYOK_LIMITS__REQUESTS_PER_MINUTE=1000000000
  BYOK_LIMITS__BURST=1000000000
  BYOK_LIMITS__MAX_CONCURRENT_REQUESTS=4096
)
"${proxy_env[@]}" "$PROXY_BIN" user create --name bench >"$TMP/proxy-setup.log" 2>&1 \
  || die "user create failed: $(cat "$TMP/proxy-setup.log")"
BENCH_TOKEN=$("${proxy_env[@]}" "$PROXY_BIN" token create --user bench --name load 2>>"$TMP/proxy-setup.log")
[[ "$BENCH_TOKEN" == bkp_* ]] || die "token create printed no token"
export BENCH_TOKEN # read by chat.lua and ttfb.py; never printed
log "starting byok-proxy on 127.0.0.1:$PROXY_PORT"
"${SRV[@]}" "${proxy_env[@]}" "$PROXY_BIN" serve >"$TMP/byok-proxy.log" 2>&1 &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
wait_port "$PROXY_PORT" "byok-proxy"
key_status=$(curl -s -o "$TMP/key.json" -w '%{http_code}' "http://127.0.0.1:$PROXY_PORT/api/keys" \
  -H "Authorization: Bearer $BENCH_TOKEN" -H 'content-type: application/json' \
  -d '{"provider":"openai","credentials":{"apiKey":"sk-bench-0123456789abcdefghijklmnopqrstuvwxyz"},"label":"load"}')
[ "$key_status" = 201 ] || die "POST /api/keys answered $key_status: $(cat "$TMP/key.json")"

PATHS=(direct nginx byok)
declare -A PORT=([direct]=$FAKE_PORT [nginx]=$NGINX_PORT [byok]=$PROXY_PORT)
declare -A LABEL=([direct]="direct (fake)" [nginx]="nginx" [byok]="byok-proxy")
URL_PATH=/v1/chat/completions

# ---------------------------------------------------------------- smoke check per path
BODY_JSON='{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}'
BODY_SSE='{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}],"stream":true}'
declare -A SMOKE
for p in "${PATHS[@]}"; do
  auth=()
  [ "$p" = byok ] && auth=(-H "Authorization: Bearer $BENCH_TOKEN")
  j=$(curl -s -o "$TMP/smoke-$p-json.out" -w '%{http_code}' "${auth[@]}" \
    -H 'content-type: application/json' -d "$BODY_JSON" "http://127.0.0.1:${PORT[$p]}$URL_PATH")
  s=$(curl -s -N -o "$TMP/smoke-$p-sse.out" -w '%{http_code}' "${auth[@]}" \
    -H 'content-type: application/json' -d "$BODY_SSE" \
    "http://127.0.0.1:${PORT[$p]}$URL_PATH")
  ok=yes
  grep -q 'Hello from fake' "$TMP/smoke-$p-json.out" || ok=no
  grep -q 'data: \[DONE\]' "$TMP/smoke-$p-sse.out" || ok=no
  SMOKE[$p]="json $j, sse $s, body ok: $ok"
  log "smoke $p: ${SMOKE[$p]}"
done

# ---------------------------------------------------------------- wrk matrix
# One TSV row per measured run; report.py turns them into the Markdown report.
RESULTS="$TMP/results.tsv"
printf 'kind\tround\tpath\tmode\tconns\trequests\trps\tp50_us\tp99_us\tnon2xx\tsock_errors\tmid_us_per_req\tfake_us_per_req\tforeign_pct\textra\n' >"$RESULTS"
NGINX_WORKER=$(ps -o pid= --ppid "$NGINX_PID" | head -n1 | tr -d ' ')
declare -A MIDPID=([direct]=$FAKE_PID [nginx]=$NGINX_WORKER [byok]=$PROXY_PID)
SERVER_PIDS=("$FAKE_PID" "$NGINX_PID" "$NGINX_WORKER" "$PROXY_PID")

# snap NAME records machine busy ticks, our ticks and the time; foreign_pct A B is the share
# of all CPUs that other processes used between two snapshots.
declare -A SNAP
snap() { SNAP[$1,busy]=$(busy_ticks); SNAP[$1,ours]=$(our_ticks "${SERVER_PIDS[@]}"); SNAP[$1,wall]=$(date +%s.%N); }

foreign_pct() { # from-snapshot to-snapshot -> % of all CPUs used by other processes
  awk -v b=$((${SNAP[$2,busy]} - ${SNAP[$1,busy]})) -v o=$((${SNAP[$2,ours]} - ${SNAP[$1,ours]})) \
    -v w="$(awk -v a="${SNAP[$1,wall]}" -v b="${SNAP[$2,wall]}" 'BEGIN {print b - a}')" \
    -v hz="$HZ" -v n="$(nproc)" 'BEGIN {f = (b - o) / hz / (w * n) * 100; if (f < 0) f = 0; printf "%.0f", f}'
}
per_req_us() { awk -v t="$1" -v hz="$HZ" -v n="$2" 'BEGIN {if (n < 1) n = 1; printf "%.1f", t / hz * 1e6 / n}'; }

# wrk mode -> (chat.lua body, query string for the fake)
declare -A LUA_MODE=([json]=json [sse]=sse [sse20]=sse)
declare -A QUERY=([json]="" [sse]="" [sse20]="?chunks=20")

run_wrk() { # round path mode conns
  local r=$1 p=$2 mode=$3 c=$4 url="http://127.0.0.1:${PORT[$2]}$URL_PATH${QUERY[$3]}" out line
  local mid=${MIDPID[$p]} fake0 mid0 fake_t mid_t
  declare -A W=()
  if [ "$r" = 1 ]; then # warmup (first round only), bounded like every run
    "${GEN[@]}" wrk -t1 -c"$c" -d"$WARMUP" --timeout 5s -s "$HERE/chat.lua" "$url" -- "${LUA_MODE[$mode]}" \
      >/dev/null 2>&1 || true
  fi
  out="$TMP/wrk-$r-$p-$mode-$c.txt"
  fake0=$(cpu_ticks "$FAKE_PID") mid0=$(cpu_ticks "$mid")
  snap a
  "${GEN[@]}" wrk -t1 -c"$c" -d"$DURATION" --timeout 5s --latency -s "$HERE/chat.lua" "$url" -- "${LUA_MODE[$mode]}" \
    >"$out" 2>&1 || true
  snap b
  fake_t=$(( $(cpu_ticks "$FAKE_PID") - fake0 )) mid_t=$(( $(cpu_ticks "$mid") - mid0 ))
  { echo "== round $r: $p $mode c=$c"; cat "$out"; } >>"$TMP/wrk.log"
  line=$(grep '^WRKRESULT' "$out" || true)
  if [ -z "$line" ]; then
    log "wrk $p $mode c=$c produced no result: $(tr '\n' ' ' <"$out" | head -c 300)"
    return
  fi
  for kv in ${line#WRKRESULT }; do W[${kv%%=*}]=${kv#*=}; done
  local errs=$(( ${W[connect]} + ${W[read]} + ${W[write]} + ${W[timeout]} )) fake_us="" fp
  [ "$p" != direct ] && fake_us=$(per_req_us "$fake_t" "${W[requests]}")
  fp=$(foreign_pct a b)
  printf 'wrk\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n' "$r" "$p" "$mode" "$c" \
    "${W[requests]}" "${W[rps]}" "${W[p50_us]}" "${W[p99_us]}" "${W[non2xx]}" "$errs" \
    "$(per_req_us "$mid_t" "${W[requests]}")" "$fake_us" "$fp" >>"$RESULTS"
  log "round $r wrk $p $mode c=$c: rps=${W[rps]} p50=${W[p50_us]}us p99=${W[p99_us]}us non2xx=${W[non2xx]} errors=$errs other-load=${fp}%"
}

run_ttfb() { # round path
  local r=$1 p=$2 tok="" line
  declare -A X=()
  [ "$p" = byok ] && tok=$BENCH_TOKEN
  snap a
  line=$(BENCH_TOKEN="$tok" "${GEN[@]}" python3 "$HERE/ttfb.py" 127.0.0.1 "${PORT[$p]}" \
    --path "$URL_PATH?$TTFB_QUERY" -n "$TTFB_N" 2>>"$TMP/ttfb.log" | grep '^TTFBRESULT' || true)
  snap b
  if [ -z "$line" ]; then
    log "ttfb $p produced no result (see target/load-logs/ttfb.log)"
    return
  fi
  for kv in ${line#TTFBRESULT }; do X[${kv%%=*}]=${kv#*=}; done
  printf 'ttfb\t%s\t%s\tsse\t1\t%s\t\t%s\t%s\t%s\t0\t\t\t%s\thead_p50_us=%s,head_p99_us=%s,total_p50_us=%s,reconnects=%s\n' \
    "$r" "$p" "${X[ok]}" "${X[event_p50_us]}" "${X[event_p99_us]}" "${X[non2xx]}" "$(foreign_pct a b)" \
    "${X[head_p50_us]}" "${X[head_p99_us]}" "${X[total_p50_us]}" "${X[reconnects]}" >>"$RESULTS"
  log "round $r ttfb $p: first event p50=${X[event_p50_us]}us p99=${X[event_p99_us]}us non2xx=${X[non2xx]}"
}

declare -A RSS_BEFORE RSS_AFTER
for p in "${PATHS[@]}"; do RSS_BEFORE[$p]=$(rss_kib "${MIDPID[$p]}"); done
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
snap start
# Rounds, and inside a round each cell's paths back to back, so that a drift in machine load
# hits every path alike; the report takes the median over rounds.
for r in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    for c in $CONNS; do
      for p in "${PATHS[@]}"; do run_wrk "$r" "$p" "$mode" "$c"; done
    done
  done
  for p in "${PATHS[@]}"; do run_ttfb "$r" "$p"; done
done
snap end
for p in "${PATHS[@]}"; do RSS_AFTER[$p]=$(rss_kib "${MIDPID[$p]}"); done
FOREIGN_ALL=$(foreign_pct start end)
log "other processes used ~${FOREIGN_ALL}% of the machine's CPU during the measurements"

# byok-proxy's own view of the run: its Prometheus counters, and the usage rows it wrote
# (usage is batched off the hot path, flushed every 500 ms: give it a moment).
sleep 1.5
curl -s "http://127.0.0.1:$PROXY_PORT/metrics" >"$TMP/byok-metrics.log" || true
PROXY_COUNTERS=$(python3 - "$TMP/byok-metrics.log" "$TMP/proxy/data/byok.db" <<'PYEOF2'
import re, sqlite3, sys
text = open(sys.argv[1]).read()
def total(name, **labels):
    n = 0.0
    for line in text.splitlines():
        m = re.match(r'^(\w+)(\{([^}]*)\})?\s+([0-9.eE+-]+)$', line)
        if not m or m.group(1) != name:
            continue
        ls = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        if all(re.fullmatch(v, ls.get(k, "")) for k, v in labels.items()):
            n += float(m.group(4))
    return int(n)
try:
    db = sqlite3.connect(f"file:{sys.argv[2]}?mode=ro", uri=True)
    rows = db.execute("select count(*) from usage_events").fetchone()[0]
except Exception as e:  # schema or path changed: say so, do not fail the run
    rows = f"? ({e})"
print(
    f"chat requests 2xx {total('byok_http_requests_total', route='/v1/chat/completions', status='2..')}, "
    f"non-2xx {total('byok_http_requests_total', route='/v1/chat/completions', status='[13-5]..')}; "
    f"usage rows written {rows}, usage records dropped {total('byok_usage_dropped_total')}; "
    f"upstream errors {total('byok_upstream_errors_total')}; "
    f"rate limited {total('byok_rate_limited_total')}; "
    f"credential cache misses {total('byok_credential_cache_total', result='miss')}"
)
PYEOF2
) || PROXY_COUNTERS="(metrics unavailable)"
log "byok-proxy counters: $PROXY_COUNTERS"

# byok-proxy log lines at warn level or above during the run (evidence of trouble)
PROXY_WARNS=$(grep -ciE 'warn|error' "$TMP/byok-proxy.log" || true)

# ---------------------------------------------------------------- report
REPORT="$ROOT/target/load-report.md"
mkdir -p "$ROOT/target"
cp "$RESULTS" "$ROOT/target/load-results.tsv"
{
  echo "invocation=$INVOCATION"
  echo "git=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
  echo "host=$(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), Linux $(uname -r)"
  echo "tools=$(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2), $("$NGINX" -v 2>&1 | sed 's/nginx version: //'), $(python3 -V)"
  echo "pinning=$PINNING"
  echo "load=wrk -t1 -c{$CONNS} -d$DURATION x $ROUNDS rounds (after one -d$WARMUP warmup per cell) POST $URL_PATH, ~1 KB body (benches/load/chat.lua); SSE = \"stream\": true, fake answers 5 events (sse) or 20 events (sse20) with no delay"
  echo "ttfb_n=$TTFB_N"
  echo "ttfb_query=$TTFB_QUERY"
  echo "foreign_all=$FOREIGN_ALL"
  echo "load_before=$LOAD_BEFORE"
  echo "smoke=$(for p in "${PATHS[@]}"; do printf '%s: %s; ' "${LABEL[$p]}" "${SMOKE[$p]}"; done)"
  for p in "${PATHS[@]}"; do echo "rss_$p=${RSS_BEFORE[$p]} ${RSS_AFTER[$p]}"; done
  echo "proxy_warns=$PROXY_WARNS"
  echo "proxy_counters=$PROXY_COUNTERS"
} >"$TMP/meta.txt"
python3 "$HERE/report.py" "$TMP/meta.txt" "$RESULTS" >"$REPORT"
cat "$REPORT"
log "report written to $REPORT (raw rows: target/load-results.tsv, logs: target/load-logs/)"
