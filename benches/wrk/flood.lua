-- wrk script of benches/wrk/flood.sh: GET WRK_PATH with the next bearer token of TOKENS_FILE
-- (one per line, wrapping around) and `X-Forwarded-For: XFF` (the node trusts 127.0.0.1, so this
-- is the client address it budgets). With DELAY_MS set, each connection waits that long before
-- each request: the flood runs at a bounded rate (~connections * 1000 / DELAY_MS per second), so
-- that the flooding client takes little of its own CPU and what is measured is the node.
--
-- With COUNT_STATUS set, done() prints "STATUS 200=<n> 429=<n> other=<n>" for the harness (429s are expected of a throttled
-- flood, so wrk's own non-2xx count says nothing here).

tokens = {}
distinct = 0
sent = 0
ok = 0
throttled = 0
other = 0

local path = os.getenv("WRK_PATH") or "/premium/article"
local xff = os.getenv("XFF") or "198.51.100.1"
local delay_ms = tonumber(os.getenv("DELAY_MS") or "0")
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(_args)
  for line in io.lines(os.getenv("TOKENS_FILE")) do
    if #line > 0 then
      distinct = distinct + 1
      tokens[distinct] = wrk.format("GET", path, {
        ["Authorization"] = "Bearer " .. line,
        ["X-Forwarded-For"] = xff,
      })
    end
  end
  if distinct == 0 then error("no tokens") end
end

function request()
  sent = sent + 1
  return tokens[(sent - 1) % distinct + 1]
end

if delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

-- counting answers costs wrk a Lua call per response: only for the flood (COUNT_STATUS set)
local counting = os.getenv("COUNT_STATUS")
if counting then
  function response(status, _headers, _body)
    if status == 200 then
      ok = ok + 1
    elseif status == 429 then
      throttled = throttled + 1
    else
      other = other + 1
    end
  end
end

function done(_summary, _latency, _requests)
  if not counting then return end
  for _, t in ipairs(threads) do
    io.write(string.format("STATUS 200=%d 429=%d other=%d\n", t:get("ok"), t:get("throttled"), t:get("other")))
  end
end
