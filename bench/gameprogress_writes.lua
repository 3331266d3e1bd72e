-- wrk script for the gameprogress write path alone: 100% legacy updates.
--
--   wrk -t1 -c32 -d10s -s bench/gameprogress_writes.lua http://HOST:PORT -- DEVICES PREFIX
--
-- GET /update/<id>/<level> with ids PREFIX .. %05d (0 <= n < DEVICES) and levels 0..1000:
-- each is an upsert, and (from issue 22 on) an event and an hourly count in the same transaction.

local devices = 10000
local prefix = "bench-"

function init(args)
   if args[1] then devices = tonumber(args[1]) end
   if args[2] then prefix = args[2] end
   math.randomseed(20261203)
end

function request()
   local id = prefix .. string.format("%05d", math.random(0, devices - 1))
   return wrk.format("GET", "/update/" .. id .. "/" .. math.random(0, 1000))
end
