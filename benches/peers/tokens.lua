-- wrk script of benches/peers/run.sh: GET WRK_PATH, each request with the next bearer token
-- from TOKENS_FILE (one JWT per line), in file order, wrapping around at the end.
--
--   WRK_PATH     request path (default /premium/article)
--   TOKENS_FILE  tokens, one per line; unset: no Authorization header at all
--   CHECK_BODY   if set, every response body must contain this string (checking runs only:
--                parsing bodies in Lua slows wrk down, so timed runs leave it unset)
--
-- done() prints, for the harness to check:
--   TOKENS sent=<requests written> distinct=<tokens in the file>
--     a "never-seen token" run is valid only if sent <= distinct (no token was used twice);
--     a warm-up run has sent every token at least once if sent >= distinct
--   BODY seen=<responses> bad=<responses without CHECK_BODY>   (only with CHECK_BODY)

-- Globals, not locals: done() reads them from each thread's state with thread:get().
tokens = {}
distinct = 0
sent = 0
seen = 0
bad = 0

local path = os.getenv("WRK_PATH") or "/premium/article"
local check = os.getenv("CHECK_BODY")
local threads = {}
local plain = nil

function setup(thread)
  table.insert(threads, thread)
end

function init(_args)
  plain = wrk.format("GET", path)
  local file = os.getenv("TOKENS_FILE")
  if file then
    for line in io.lines(file) do
      if #line > 0 then
        distinct = distinct + 1
        -- the whole request, built once: per request wrk only indexes this table, whatever
        -- the number of distinct tokens (building a new request string per request made wrk,
        -- not the server, the bottleneck with 10,000 rotating tokens)
        tokens[distinct] = wrk.format("GET", path, { ["Authorization"] = "Bearer " .. line })
      end
    end
    if distinct == 0 then error("no tokens in " .. file) end
  end
end

function request()
  sent = sent + 1
  if distinct == 0 then
    return plain
  end
  return tokens[(sent - 1) % distinct + 1]
end

if check then
  function response(_status, _headers, body)
    seen = seen + 1
    if not body or not string.find(body, check, 1, true) then bad = bad + 1 end
  end
end

function done(_summary, _latency, _requests)
  for _, t in ipairs(threads) do
    io.write(string.format("TOKENS sent=%d distinct=%d\n", t:get("sent"), t:get("distinct")))
    if check then
      io.write(string.format("BODY seen=%d bad=%d\n", t:get("seen"), t:get("bad")))
    end
  end
end
