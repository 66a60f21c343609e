-- wrk script: each request carries the next Authorization value given after `--`, round robin.
-- With twice as many values as connections, the requests in flight differ, so the sidecar cannot
-- answer several of them with one shared directory round trip (it does that for equal credentials).
local requests = {}
local next_request = 1

function init(args)
   for i, authorization in ipairs(args) do
      requests[i] = wrk.format(nil, nil, { Authorization = authorization })
   end
end

function request()
   local current = requests[next_request]
   next_request = next_request % #requests + 1
   return current
end
