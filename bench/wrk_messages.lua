-- wrk script for the messages endpoint and the bare view (bench/run.py passes the arguments).
--   wrk -t1 -c50 -d15s -s bench/wrk_messages.lua http://127.0.0.1:18000 -- PATH KEY PREFIX MAX IDEMPOTENCY
-- Every request carries a new contactIdentifier (and idempotency key), so no message waits behind another
-- one of its conversation. MAX bounds the responses per thread (0: only the duration bounds the run).
-- PATH and KEY may be comma-separated lists of the same length (several workspaces, each with its own key
-- and channel): request n goes to the n-th target, round robin.
-- done() prints one JSON line, prefixed with "WRKJSON ".

local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

local function split(text)
  local items = {}
  for item in string.gmatch(text, "[^,]+") do
    table.insert(items, item)
  end
  return items
end

function init(args)
  paths = split(args[1])
  keys = split(args[2])
  if #paths ~= #keys then
    error("PATH and KEY lists differ in length")
  end
  prefix = args[3] .. "-t" .. tid
  max_responses = tonumber(args[4]) or 0
  idempotency = args[5] == "1"
  counter = 0
  responses = 0
  non2xx = 0
  statuses = {}
end

function request()
  counter = counter + 1
  local body = '{"type":"TEXT","contactIdentifier":"' .. prefix .. "-" .. counter ..
    '@bench.example","contactName":"Bench","content":{"text":{"body":"Hello! How long does shipping take to Lisbon?"}}}'
  local target = (counter - 1) % #paths + 1
  local headers = {["Content-Type"] = "application/json", ["X-API-Key"] = keys[target]}
  if idempotency then
    headers["X-Idempotency-Key"] = prefix .. "-" .. counter
  end
  return wrk.format("POST", paths[target], headers, body)
end

function response(status, headers, body)
  responses = responses + 1
  local name = tostring(status)
  statuses[name] = (statuses[name] or 0) + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
  if max_responses > 0 and responses >= max_responses then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local merged = {}
  local total_non2xx = 0
  for _, thread in ipairs(threads) do
    total_non2xx = total_non2xx + thread:get("non2xx")
    local thread_statuses = thread:get("statuses")
    for name, count in pairs(thread_statuses) do
      merged[name] = (merged[name] or 0) + count
    end
  end
  local parts = {}
  for name, count in pairs(merged) do
    table.insert(parts, string.format('"%s":%d', name, count))
  end
  io.write(string.format(
    'WRKJSON {"durationUs":%d,"requests":%d,"bytes":%d,"non2xx":%d,"statuses":{%s},' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latencyUs":{"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d}}\n',
    summary.duration, summary.requests, summary.bytes, total_non2xx, table.concat(parts, ","),
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout, latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99)))
end
