-- wrk script of benches/wrk/run.sh: every request is built by request() (wrk.format), the same
-- way in every scenario, so scenarios differ only in what the node does:
--   TOKENS_FILE unset: no Authorization header (public hit);
--   TOKENS_FILE set:   the next token from the file (one JWT per line) as a bearer token,
--                      cycling through all of them (a file of one token: "one token").
-- WRK_PATH is the request path (default /premium/article).
local tokens = {}
local i = 0
local path = os.getenv("WRK_PATH") or "/premium/article"

function init(args)
  local file = os.getenv("TOKENS_FILE")
  if file then
    for line in io.lines(file) do
      if #line > 0 then tokens[#tokens + 1] = "Bearer " .. line end
    end
    -- start each thread at a different offset
    i = math.random(#tokens)
  end
end

function request()
  if #tokens == 0 then
    return wrk.format("GET", path)
  end
  i = i % #tokens + 1
  return wrk.format("GET", path, { ["Authorization"] = tokens[i] })
end
