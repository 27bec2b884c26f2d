-- SPDX-License-Identifier: Apache-2.0
--
-- wrk script for bench/serve.py: plain GETs, with the same summary line
-- as post.lua (the HTTP ceiling: GET /v2/health/live).

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "SSBENCH requests=%d duration_us=%d bytes=%d connect=%d read=%d " ..
        "write=%d status=%d timeout=%d p50_us=%d p90_us=%d p99_us=%d " ..
        "mean_us=%.1f max_us=%d\n",
        summary.requests, summary.duration, summary.bytes, e.connect,
        e.read, e.write, e.status, e.timeout, latency:percentile(50),
        latency:percentile(90), latency:percentile(99), latency.mean,
        latency.max))
end
