-- wrk script of benches/wrk/run.sh: every request is built by request() (wrk.format), the same
-- way in every scenario, so scenarios differ only in what the node does:
--   TOKENS_FILE unset: no Authorization header (public hit);
--   TOKENS_FILE set:   the next token from the file (one JWT per line) as a bearer token,
--                      cycling through all of them (a file of one token: "one token").
-- WRK_PATH is the request path (default /premium/article).
local tokens = {}
local i = 0
local path = os.getenv("WRK_PATH") or "/premium/article"
local plain = nil

function init(args)
  plain = wrk.format("GET", path)
  local file = os.getenv("TOKENS_FILE")
  if file then
    for line in io.lines(file) do
      -- the whole request, built once: per request wrk only indexes this table, whatever the
      -- number of distinct tokens (a new request string per request made wrk the bottleneck)
      if #line > 0 then
        tokens[#tokens + 1] = wrk.format("GET", path, { ["Authorization"] = "Bearer " .. line })
      end
    end
    -- start each thread at a different offset
    i = math.random(#tokens)
  end
end

function request()
  if #tokens == 0 then
    return plain
  end
  i = i % #tokens + 1
  return tokens[i]
end
