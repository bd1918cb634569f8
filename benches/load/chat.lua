-- wrk script for benches/load/run.sh: POST a ~1 KB OpenAI chat completion request.
--
--   wrk -t1 -c32 -d5s -s benches/load/chat.lua http://127.0.0.1:PORT/v1/chat/completions -- json
--   wrk ... -- sse        # same body with "stream": true (+ stream_options.include_usage)
--
-- BENCH_TOKEN (environment, optional): sent as `Authorization: Bearer $BENCH_TOKEN`, so the
-- token never shows on a command line. The URL's path is the request path.
--
-- `done` prints one machine-readable line that run.sh parses:
--   WRKRESULT requests=N duration_us=N rps=F p50_us=N p99_us=N non2xx=N connect=N read=N
--             write=N timeout=N bytes=N
-- (`non2xx` is wrk's "Non-2xx or 3xx responses" count, i.e. summary.errors.status.)

local filler = string.rep("The quick brown fox jumps over the lazy dog. ", 17)

local function body(stream)
  local tail = ""
  if stream then
    tail = ',"stream":true,"stream_options":{"include_usage":true}'
  else
    tail = ',"stream":false'
  end
  return '{"model":"openai/gpt-4o-mini","messages":['
    .. '{"role":"system","content":"You are a concise assistant. Answer in one sentence."},'
    .. '{"role":"user","content":"' .. filler .. '"}],'
    .. '"temperature":0.2,"max_tokens":64,"user":"load-bench"' .. tail .. '}'
end

function init(args)
  local mode = args[1] or "json"
  if mode ~= "json" and mode ~= "sse" then
    error("chat.lua: mode must be json or sse, got " .. tostring(mode))
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if mode == "sse" then
    wrk.headers["Accept"] = "text/event-stream"
  else
    wrk.headers["Accept"] = "application/json"
  end
  local token = os.getenv("BENCH_TOKEN")
  if token and token ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. token
  end
  wrk.body = body(mode == "sse")
  -- The fake's options (`?chunks=N&delay_ms=D`) also go as `x-title: bench <query>`:
  -- byok-proxy forwards no query string it does not need, and x-title crosses every path.
  local query = string.match(wrk.path or "", "%?(.*)$")
  if query and query ~= "" then
    wrk.headers["X-Title"] = "bench " .. query
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    "WRKRESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d non2xx=%d connect=%d read=%d write=%d timeout=%d bytes=%d\n",
    summary.requests, summary.duration, summary.requests / secs,
    latency:percentile(50), latency:percentile(99),
    e.status, e.connect, e.read, e.write, e.timeout, summary.bytes))
end
