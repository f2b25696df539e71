-- wrk script for the accept endpoint.
--
-- Arguments (after `--`): mode, url_percent, delay_ms, limit
--   mode         "repeat": ids cycle through 1000 values; "new": random
--                63-bit ids, a new one per request
--   url_percent  share of requests that carry a `url` (0-100)
--   delay_ms     pause of each connection between requests, for a paced load
--   limit        stop after this many responses (0: run for the duration)
-- At the end it prints one JSON line with the figures the bench reads.

local mode, url_every, delay_ms, limit = "new", 0, 0, 0
local counter, responses = 0, 0

local function seed()
  local address = tonumber(tostring({}):match("0x(%x+)") or "0", 16) or 0
  math.randomseed((os.time() * 1000003 + address) % 2147483647)
end

function init(args)
  mode = args[1] or "new"
  local url_percent = tonumber(args[2] or "0")
  if url_percent > 0 then url_every = math.floor(100 / url_percent) end
  delay_ms = tonumber(args[3] or "0")
  limit = tonumber(args[4] or "0")
  seed()
  if delay_ms > 0 then
    delay = function() return delay_ms end
  end
  if limit > 0 then
    response = function()
      responses = responses + 1
      if responses >= limit then wrk.thread:stop() end
    end
  end
end

function request()
  counter = counter + 1
  local id
  if mode == "repeat" then
    id = tostring(counter % 1000)
  else
    -- Up to 18 digits: always inside the signed 64-bit range.
    id = string.format("%d%09d", math.random(1, 999999999),
      math.random(0, 999999999))
  end
  local path = "/api/verve/accept?id=" .. id
  if url_every > 0 and counter % url_every == 0 then
    path = path .. "&url=http%3A%2F%2Fhook.invalid%2F" .. (counter % 50)
  end
  return wrk.format("GET", path)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"socket_errors":%d,"status_errors":%d,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    e.status, latency:percentile(50), latency:percentile(99), latency.max))
end
