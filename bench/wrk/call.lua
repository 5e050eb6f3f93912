-- wrk script for the P3 benchmarks: one fixed request (method, body, bearer token
-- from the environment), a cap on the number of responses per thread, and a
-- machine-readable summary line.
local method = os.getenv("JB_METHOD") or "GET"
local body = os.getenv("JB_BODY")
local token = os.getenv("JB_TOKEN")
local max_responses = tonumber(os.getenv("JB_MAX") or "0")

wrk.method = method
if body and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

-- JB_ADDRS="127.0.0.1:P1,127.0.0.1:P2": thread i talks to address i (mod n), so one
-- wrk run with one merged latency histogram loads several service replicas (P3pg).
local addrs = os.getenv("JB_ADDRS") or ""
local next_addr = 0
setup = function(thread)
  if addrs == "" then
    return
  end
  local list = {}
  for hostport in string.gmatch(addrs, "[^,]+") do
    local host, port = string.match(hostport, "^(.*):(%d+)$")
    table.insert(list, wrk.lookup(host, port)[1])
  end
  thread.addr = list[next_addr % #list + 1]
  next_addr = next_addr + 1
end

-- JB_MIX=FILE of "token<TAB>body" lines: every request takes the next line, round
-- robin per thread, so one run spreads over many hosts and keys (P3pg's fleet).
local mix = os.getenv("JB_MIX") or ""
if mix ~= "" then
  local reqs = {}
  local path = wrk.path
  for line in io.lines(mix) do
    local t, b = string.match(line, "^([^\t]+)\t(.*)$")
    table.insert(reqs, wrk.format(method, path, {
      ["Authorization"] = "Bearer " .. t, ["Content-Type"] = "application/json"}, b))
  end
  local at = 0
  init = function(args)
    at = math.random(#reqs) - 1
  end
  request = function()
    at = at % #reqs + 1
    return reqs[at]
  end
end

local count = 0
response = function(status, headers, resp_body)
  count = count + 1
  if max_responses > 0 and count >= max_responses then
    wrk.thread:stop()
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
