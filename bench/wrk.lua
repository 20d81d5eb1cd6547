-- wrk script for bench/: rotate through prebuilt requests, then print one JSON line of results.
--
-- Arguments after `--`: METHOD PATH [ENTRY ...]. For GET an entry is a Cookie header value,
-- for POST a urlencoded form body. Each request takes the next entry, so the load is spread
-- over many sessions (or many accounts) rather than hammering one key.

local prepared = {}
local next_index = 0

function init(args)
  local method, path = args[1], args[2]
  if #args < 3 then
    prepared[1] = wrk.format(method, path)
  end
  for n = 3, #args do
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
end

function request()
  next_index = next_index % #prepared + 1
  return prepared[next_index]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean
  ))
end
