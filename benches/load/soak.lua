-- wrk script for benches/load/soak.sh: a fixed mix of requests, in a repeating order of 20:
--   10 chat completions answered as JSON,
--    6 streamed chat completions (20 SSE events each),
--    2 with a bad token (401: one not token-shaped, one unknown),
--    1 to an unknown route (404),
--    1 with a body that is not JSON (400).
--
--   wrk -t1 -c32 -d10s -s benches/load/soak.lua http://127.0.0.1:PORT
--
-- BENCH_TOKEN (environment): the app token, never on a command line.
-- `done` prints one line soak.sh parses:
--   WRKRESULT requests=N non2xx=N connect=N read=N write=N timeout=N

local filler = string.rep("The quick brown fox jumps over the lazy dog. ", 17)

local function chat(stream)
  local tail = stream and ',"stream":true,"stream_options":{"include_usage":true}' or ""
  return '{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"'
    .. filler .. '"}],"max_tokens":64,"user":"soak"' .. tail .. '}'
end

local requests = {}

function init(args)
  local token = os.getenv("BENCH_TOKEN") or ""
  local good = {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
  }
  local sse = {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
    ["Accept"] = "text/event-stream",
    ["X-Title"] = "bench chunks=20",
  }
  local json = wrk.format("POST", "/v1/chat/completions", good, chat(false))
  local stream = wrk.format("POST", "/v1/chat/completions", sse, chat(true))
  local malformed = wrk.format("POST", "/v1/chat/completions",
    { ["Authorization"] = "Bearer x", ["Content-Type"] = "application/json" }, chat(false))
  local unknown = wrk.format("POST", "/v1/chat/completions",
    { ["Authorization"] = "Bearer bkp_" .. string.rep("A", 43), ["Content-Type"] = "application/json" },
    chat(false))
  local notfound = wrk.format("GET", "/v1/nothing-here", good, nil)
  local badjson = wrk.format("POST", "/v1/chat/completions", good, "{not json")
  local order = {
    json, stream, json, json, stream, malformed, json, stream, notfound, json,
    stream, json, unknown, json, stream, json, json, stream, badjson, json,
  }
  for i, r in ipairs(order) do requests[i] = r end
end

local n = 0

function request()
  n = n + 1
  return requests[(n - 1) % #requests + 1]
end

function done(summary, latency, reqs)
  local e = summary.errors
  io.write(string.format(
    "WRKRESULT requests=%d non2xx=%d connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, e.status, e.connect, e.read, e.write, e.timeout))
end
