-- wrk script for bench/webhooks.py: closed-loop POSTs of webhook deliveries.
--   wrk -t1 -c32 -d15s -s bench/webhook_load.lua URL -- PATH NONCE LEADS BODY ["name: value" ...]
-- BODY and the header values may hold @ID@ and @LEAD@ (bench/webhook_scenarios.py); each
-- request replaces @ID@ with a delivery id unique to this run (NONCE-thread-counter), so every
-- request is a new delivery, and @LEAD@ with the next of 1..LEADS. A template without @ID@
-- sends the same delivery every time (the duplicates scenario). Per-thread status counts are
-- gathered in done() and printed, with wrk's numbers, as one line: "WRK_JSON {...}".

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("thread_id", #threads)
end

function init(args)
   path = args[1]
   nonce = args[2]
   leads = tonumber(args[3])
   body = args[4]
   header_templates = {}
   for i = 5, #args do
      local name, value = args[i]:match("^([^:]+):%s*(.*)$")
      header_templates[name] = value
   end
   counter = 0
   statuses = {}
end

-- Ids hold only letters, digits and "-", so they are safe as gsub replacements.
local function fill(template, id, lead)
   return (template:gsub("@ID@", id):gsub("@LEAD@", lead))
end

function request()
   counter = counter + 1
   local id = nonce .. "-" .. thread_id .. "-" .. counter
   local lead = tostring(counter % leads + 1)
   local headers = {}
   for name, value in pairs(header_templates) do
      headers[name] = fill(value, id, lead)
   end
   return wrk.format("POST", path, headers, fill(body, id, lead))
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local counts = {}
   for _, thread in ipairs(threads) do
      for status, n in pairs(thread:get("statuses")) do
         counts[status] = (counts[status] or 0) + n
      end
   end
   local parts = {}
   for status, n in pairs(counts) do
      table.insert(parts, string.format('"%d": %d', status, n))
   end
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, '
         .. '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d, "status": %d}, '
         .. '"latency_us": {"mean": %.1f, "p50": %d, "p90": %d, "p99": %d, "max": %d}, '
         .. '"statuses": {%s}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.timeout, e.status,
      latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, table.concat(parts, ", ")))
end
