-- wrk as a short-polling client, for scripts/poll-vs-wrk.sh: every connection makes one request
-- per poll interval, like a `pushbench load -t poll` client, starting at a random phase of it.
--
--   wrk -t1 -c CLIENTS -d D -s scripts/poll-vs-wrk.lua URL -- INTERVAL_MS CLIENTS
--
-- wrk asks delay() before every request of a connection, the first included, and counts the
-- delay from the end of the previous response: a connection makes one request per interval plus
-- one response time, where pushbench's clients tick at a fixed rate. On an idle loopback server
-- the difference is under a millisecond per interval; when the server or wrk answers late, wrk
-- falls short of the planned rate (scripts/poll-vs-wrk.sh reports the rate each one reached).
-- wrk keeps these timers (millisecond resolution) in an unsorted list that its event loop scans
-- on every pass, so its cost per request in this mode grows with the number of connections.

local interval = 100
-- The first delay() of each connection is a random phase of the interval, so that connections
-- opened in the same millisecond do not poll in lockstep (pushbench's clients do the same).
local first_left = 0

function init(args)
   interval = tonumber(args[1]) or interval
   first_left = tonumber(args[2]) or 0
   math.randomseed(os.time())
end

function delay()
   if first_left > 0 then
      first_left = first_left - 1
      return math.random(0, interval - 1)
   end
   return interval
end

-- Exact totals on one line for the script to read (wrk's own summary rounds the bytes).
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "poll-vs-wrk: requests %d bytes %d duration_us %d errors connect %d read %d write %d status %d timeout %d\n",
      summary.requests, summary.bytes, summary.duration,
      e.connect, e.read, e.write, e.status, e.timeout))
end
