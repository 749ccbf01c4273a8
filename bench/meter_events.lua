-- wrk script for bench/events_api.py --wrk: POST /v1/billing/meter_events, one event per
-- request, each with an identifier no other request uses.
local counter = 0
local keyed = os.getenv("METERD_BENCH_IDEMPOTENCY") == "1"

local threads = {}

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.path = "/v1/billing/meter_events"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("METERD_BENCH_KEY")
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

function request()
  counter = counter + 1
  local body = "event_name=api_call&identifier=wrk-" .. thread_id .. "-" .. counter
    .. "&payload[stripe_customer_id]=cus_" .. (counter % 100) .. "&payload[value]=1"
  local headers = nil
  if keyed then
    -- wrk.format uses either these headers or wrk.headers, so copy them over.
    headers = {}
    for name, value in pairs(wrk.headers) do headers[name] = value end
    headers["Idempotency-Key"] = "key-" .. thread_id .. "-" .. counter
  end
  return wrk.format(nil, nil, headers, body)
end
