# Shared by the load scripts (sourced, not run): process bookkeeping, ports, and starting the
# bench fake gateway and a byok-proxy with a real user, token and OpenAI key.
#
# Before sourcing, a script sets ROOT and TMP (a directory of its own); it may set
# KEEP_LOGS=dir to have TMP's *.log files copied there on exit. Everything started through
# these functions is recorded in PIDS and stopped on exit (TERM, then KILL after 5 s).
# Only 127.0.0.1 is ever used.

log() { printf '[%s %s] %s\n' "${LOG_NAME:-load}" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    # up to 5 s for a clean exit (an exited child stays a zombie until waited for: state Z)
    for _ in $(seq 1 50); do
      case $(ps -o stat= -p "$pid" 2>/dev/null) in "" | Z*) break ;; esac
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "${KEEP_LOGS:-}" ]; then
    mkdir -p "$KEEP_LOGS" && cp "$TMP"/*.log "$KEEP_LOGS/" 2>/dev/null || true
  fi
  rm -rf "$TMP"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
wait_port() { # port, what
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  die "$2 did not listen on 127.0.0.1:$1"
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# start_fake [command prefix...]: the bench fake gateway on a free port -> FAKE_PORT.
start_fake() {
  "$@" "$ROOT/target/release/examples/fake-upstream" --threads 1 >"$TMP/fake.port" 2>"$TMP/fake.log" &
  PIDS+=($!)
  for _ in $(seq 1 100); do [ -s "$TMP/fake.port" ] && break; sleep 0.05; done
  FAKE_PORT=$(head -n1 "$TMP/fake.port")
  wait_port "$FAKE_PORT" "fake upstream"
}

# start_byok PORT [command prefix...]: byok-proxy (PROXY_BIN, default the release build) in
# gateway mode in front of the fake, limits out of the way, with a user, an app token
# (exported as BENCH_TOKEN, never printed) and an OpenAI key -> PROXY_PID. Extra settings
# come from the BYOK_EXTRA array (e.g. BYOK_EXTRA=(BYOK_LIMITS__MAX_IN_FLIGHT=100000)).
start_byok() {
  local port=$1
  shift
  local bin=${PROXY_BIN:-"$ROOT/target/release/byok-proxy"}
  mkdir -p "$TMP/proxy"
  local env=(
    env -C "$TMP/proxy"
    BYOK_MASTER_KEY="$("$bin" key generate 2>/dev/null)"
    BYOK_ADMIN_TOKEN="bench-admin-$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
    BYOK_LISTEN="127.0.0.1:$port"
    BYOK_UPSTREAM__GATEWAY__BASE_URL="http://127.0.0.1:$FAKE_PORT/v1"
    AI_GATEWAY_API_KEY=gw-bench
    BYOK_LOG__LEVEL=warn
    BYOK_LIMITS__REQUESTS_PER_MINUTE=1000000000
    BYOK_LIMITS__BURST=1000000000
    BYOK_LIMITS__MAX_CONCURRENT_REQUESTS=100000
    ${BYOK_EXTRA[@]+"${BYOK_EXTRA[@]}"}
  )
  "${env[@]}" "$bin" user create --name bench >"$TMP/setup.log" 2>&1 \
    || die "user create failed: $(cat "$TMP/setup.log")"
  BENCH_TOKEN=$("${env[@]}" "$bin" token create --user bench --name load 2>>"$TMP/setup.log")
  [[ "$BENCH_TOKEN" == bkp_* ]] || die "token create printed no token"
  export BENCH_TOKEN
  "${env[@]}" "$@" "$bin" serve >"$TMP/proxy.log" 2>&1 &
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  wait_port "$port" byok-proxy
  local status
  status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/api/keys" \
    -H "Authorization: Bearer $BENCH_TOKEN" -H 'content-type: application/json' \
    -d '{"provider":"openai","credentials":{"apiKey":"sk-bench-0123456789abcdefghijklmnopqrstuvwxyz"},"label":"load"}')
  [ "$status" = 201 ] || die "POST /api/keys answered $status"
}
