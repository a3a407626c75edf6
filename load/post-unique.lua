-- wrk script for load/cache.sh: like post.lua, but every request's last message is made
-- unique (a per-thread prefix and a counter), so a response cache can only miss.
--   wrk ... -s load/post-unique.lua URL -- BODY_FILE
-- The body file must contain the placeholder `@N@`.

local counter = 0
local prefix = ""

function init(args)
  local f = assert(io.open(args[1], "rb"))
  template = f:read("*a")
  f:close()
  -- A table's address differs per thread (each has its own Lua state).
  prefix = os.time() .. tostring({}):gsub("[^%w]", "")
end

function request()
  counter = counter + 1
  local body = template:gsub("@N@", prefix .. "-" .. counter)
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer sk-load-test",
  }, body)
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    'WRKRESULT {"requests":%d,"rps":%.1f,"errors":{"status":%d,"other":%d},' ..
    '"latency_us":{"p50":%d,"p99":%d}}\n',
    summary.requests, summary.requests / secs, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
