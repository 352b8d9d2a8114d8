-- wrk script for tests/upgrade.sh: GETs the paths in $WRK_PATHS (space-separated) in turn and,
-- when done, prints one line per status code, per Cache-Status value, and the socket errors:
--   status 200 123456
--   cache tollgate; hit 120000
--   errors connect=0 read=0 write=0 timeout=0 status=0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  paths = {}
  for p in string.gmatch(os.getenv("WRK_PATHS") or "/", "%S+") do
    table.insert(paths, p)
  end
  n = 0
  statuses = {}
  caches = {}
end

function request()
  n = n + 1
  return wrk.format("GET", paths[(n % #paths) + 1])
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  local c = headers["cache-status"] or headers["Cache-Status"] or "none"
  caches[c] = (caches[c] or 0) + 1
end

local function merge(name)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get(name)) do
      total[k] = (total[k] or 0) + v
    end
  end
  return total
end

function done(summary, latency, requests)
  for k, v in pairs(merge("statuses")) do
    io.write(string.format("status %s %d\n", k, v))
  end
  for k, v in pairs(merge("caches")) do
    io.write(string.format("cache %s %d\n", k, v))
  end
  local e = summary.errors
  io.write(string.format("errors connect=%d read=%d write=%d timeout=%d status=%d\n",
    e.connect, e.read, e.write, e.timeout, e.status))
  io.write(string.format("requests %d\n", summary.requests))
end
