-- wrk script: every request carries the next token from TOKENS_FILE (one JWT per line),
-- cycling through all of them, as a bearer token on WRK_PATH.
local tokens = {}
local i = 0
local path = os.getenv("WRK_PATH") or "/premium/article"

function init(args)
  for line in io.lines(os.getenv("TOKENS_FILE")) do
    if #line > 0 then tokens[#tokens + 1] = line end
  end
  -- start each thread at a different offset
  i = math.random(#tokens)
end

function request()
  i = i % #tokens + 1
  return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. tokens[i] })
end
