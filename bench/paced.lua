-- Paces wrk: each connection waits `interval` ms before each request, so N connections send
-- about N * 1000 / interval requests per second (a little less: the answer's time adds to it).
local interval = 10

function init(args)
  if args[1] then interval = tonumber(args[1]) end
end

function delay()
  return interval
end
