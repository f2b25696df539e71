-- wrk script for the accept endpoint.
--
-- Arguments (after `--`): mode, url_percent, rate
--   mode         "repeat": ids cycle through 1000 values; "new": random
--                63-bit ids, a new one per request; "pool": ids drawn at
--                random from 30 000 random 63-bit values, so most repeat,
--                on whichever instance a connection reaches
--   url_percent  share of requests that carry a `url` (0-100)
--   rate         requests per second on a fixed schedule, whatever the
--                answers take (needs enough connections); 0: as fast as the
--                connections go
-- At the end it prints one JSON line with the figures the bench reads.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } verve_timespec;
  int clock_gettime(int clock, verve_timespec *now);
]]
local timespec = ffi.new("verve_timespec")

local function now_ms()
  ffi.C.clock_gettime(1, timespec) -- CLOCK_MONOTONIC
  return tonumber(timespec.tv_sec) * 1000 + tonumber(timespec.tv_nsec) / 1e6
end

local mode, url_every = "new", 0
local counter = 0
local pool = {}

local function random_id()
  -- Up to 18 digits: always inside the signed 64-bit range.
  return string.format("%d%09d", math.random(1, 999999999),
    math.random(0, 999999999))
end

local function seed()
  local address = tonumber(tostring({}):match("0x(%x+)") or "0", 16) or 0
  math.randomseed((os.time() * 1000003 + address) % 2147483647)
end

function init(args)
  mode = args[1] or "new"
  local url_percent = tonumber(args[2] or "0")
  if url_percent > 0 then url_every = math.floor(100 / url_percent) end
  local rate = tonumber(args[3] or "0")
  seed()
  if mode == "pool" then
    -- The same pool in every wrk run: seeded alike, then reseeded.
    math.randomseed(7)
    for i = 1, 30000 do pool[i] = random_id() end
    seed()
  end
  if rate > 0 then
    -- Each request takes the next slot of one schedule for the thread, so
    -- slow answers do not lower the rate while connections are free.
    local interval, next_slot = 1000 / rate, nil
    delay = function()
      local now = now_ms()
      next_slot = next_slot or now
      local wait = next_slot - now
      next_slot = next_slot + interval
      if wait < 0 then return 0 end
      return wait
    end
  end
end

function request()
  counter = counter + 1
  local id
  if mode == "repeat" then
    id = tostring(counter % 1000)
  elseif mode == "pool" then
    id = pool[math.random(1, #pool)]
  else
    id = random_id()
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
