-- wrk script for the gameprogress mix: 90% legacy reads, 10% legacy updates.
--
--   wrk -t1 -c64 -d10s --latency -s bench/gameprogress.lua http://HOST:PORT -- DEVICES PREFIX
--
-- Reads:   GET /deviceId=<id>          (an id seeded by bench/run: PREFIX .. %05d, 0 <= n < DEVICES)
-- Updates: GET /update/<id>/<level>    (same ids, level 0..1000)
-- Headers given with -H (e.g. 'Connection: close') go on every request via wrk.format.

local devices = 10000
local prefix = "bench-"
local update_share = 0.10

function init(args)
   if args[1] then devices = tonumber(args[1]) end
   if args[2] then prefix = args[2] end
   math.randomseed(20240601)
end

function request()
   local id = prefix .. string.format("%05d", math.random(0, devices - 1))
   if math.random() < update_share then
      return wrk.format("GET", "/update/" .. id .. "/" .. math.random(0, 1000))
   end
   return wrk.format("GET", "/deviceId=" .. id)
end
