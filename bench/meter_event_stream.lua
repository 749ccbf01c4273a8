-- wrk script for bench/stream_api.py: POST /v2/billing/meter_event_stream, 100 events per
-- request, every identifier unique in the run: <run>-<thread>-<request counter>-<index>.
-- Environment: METERD_BENCH_TOKEN (a meter event session's token), METERD_BENCH_EVENT (the
-- event name), METERD_BENCH_RUN (a run id no other run uses).
-- done() prints one "meterd-stream ..." line that bench/stream_api.py reads.
local EVENTS = 100
local CUSTOMERS = 1000
-- Event i of request n goes to customer (n * EVENTS + i) % CUSTOMERS: PERIOD templates.
local PERIOD = CUSTOMERS / EVENTS

local threads = {}

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

local templates = {}
local counter = 0
sent = 0
ok = 0
statuses = {}

function init(args)
  wrk.method = "POST"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("METERD_BENCH_TOKEN")
  wrk.headers["Content-Type"] = "application/json"
  local open = '{"event_name":"' .. os.getenv("METERD_BENCH_EVENT") .. '","identifier":"'
    .. os.getenv("METERD_BENCH_RUN") .. "-" .. thread_id .. "-"
  -- A body is table.concat(parts, counter): the counter fills every identifier's gap.
  for t = 0, PERIOD - 1 do
    local parts = { '{"events":[' .. open }
    for i = 0, EVENTS - 1 do
      local close = "-" .. i .. '","payload":{"stripe_customer_id":"cus_'
        .. ((t * EVENTS + i) % CUSTOMERS) .. '","value":"1"}}'
      parts[#parts + 1] = close .. (i < EVENTS - 1 and ("," .. open) or "]}")
    end
    templates[t] = parts
  end
end

function request()
  -- wrk calls this once in thread 1 before the run to check the request: a request that is
  -- never sent (bench/stream_api.py subtracts it from "sent").
  counter = counter + 1
  sent = sent + 1
  return wrk.format(nil, nil, nil, table.concat(templates[counter % PERIOD], counter))
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
  else
    statuses[status] = (statuses[status] or 0) + 1
  end
end

function done(summary, latency, requests)
  local total_sent, total_ok, other = 0, 0, {}
  for _, thread in ipairs(threads) do
    total_sent = total_sent + thread:get("sent")
    total_ok = total_ok + thread:get("ok")
    for status, count in pairs(thread:get("statuses")) do
      other[status] = (other[status] or 0) + count
    end
  end
  local listed = {}
  for status, count in pairs(other) do
    listed[#listed + 1] = status .. ":" .. count
  end
  local e = summary.errors
  io.write(string.format(
    "meterd-stream sent=%d ok=%d duration_us=%d p50_us=%d p99_us=%d "
      .. "errors=connect:%d,read:%d,write:%d,timeout:%d statuses=%s\n",
    total_sent, total_ok, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.timeout, table.concat(listed, ",")
  ))
end
