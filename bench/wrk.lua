-- wrk script for bench/: rotate through prebuilt requests, then print one JSON line of results.
--
-- Arguments after `--`: METHOD PATH EXPECT [ENTRY ...]. For GET an entry is a Cookie header
-- value, for POST a urlencoded form body. Each request takes the next entry, so the load is
-- spread over many sessions (or many accounts) rather than hammering one key. EXPECT is "-"
-- (any status below 400, as wrk counts errors), or the statuses the answers must have, e.g.
-- "409,429"; then every other status is counted as unexpected.

local prepared = {}
local next_index = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local method, path, expect = args[1], args[2], args[3]
  if #args < 4 then
    prepared[1] = wrk.format(method, path)
  end
  for n = 4, #args do
    local headers, body = {}, nil
    if method == "POST" then
      headers["Content-Type"] = "application/x-www-form-urlencoded"
      -- What a browser sends with a form post from the page itself (the cross-origin check).
      headers["Sec-Fetch-Site"] = "same-origin"
      body = args[n]
    else
      headers["Cookie"] = args[n]
    end
    prepared[#prepared + 1] = wrk.format(method, path, headers, body)
  end
  -- Threads start at different entries, so that they do not move in lock-step.
  next_index = math.random(#prepared) - 1
  unexpected = 0
  if expect ~= "-" then
    -- Defined only here: wrk reads every response in full when a response() hook exists.
    local wanted = {}
    for code in string.gmatch(expect, "%d+") do wanted[tonumber(code)] = true end
    response = function(status)
      if not wanted[status] then unexpected = unexpected + 1 end
    end
  end
end

function request()
  next_index = next_index % #prepared + 1
  return prepared[next_index]
end

function done(summary, latency, requests)
  local e = summary.errors
  local unexpected = 0
  for _, thread in ipairs(threads) do unexpected = unexpected + thread:get("unexpected") end
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"unexpected":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p99":%d}}\n',
    summary.requests, summary.duration, summary.bytes, unexpected,
    e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(50), latency:percentile(99)
  ))
end
