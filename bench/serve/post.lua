-- SPDX-License-Identifier: Apache-2.0
--
-- wrk script for bench/serve.py: POSTs one fixed body read from a file,
-- and prints a machine-readable summary line at the end.
--
--   wrk -s post.lua URL -- BODYFILE [INFERENCE_HEADER_LENGTH]
--
-- With a header length the body is a Triton binary-tensor request (JSON
-- header of that many bytes, then the raw tensors); without, KServe JSON.
-- wrk builds the request once per thread after init(), so the body is read
-- once and no Lua runs per request.

-- SSBENCH_THINK_MS=N (environment): each connection waits N ms after an
-- answer before its next request (wrk's delay()), a load below
-- saturation; without it nothing runs per request.
local think = tonumber(os.getenv("SSBENCH_THINK_MS") or "0")
if think > 0 then
    function delay()
        return think
    end
end

function init(args)
    local f = assert(io.open(args[1], "rb"))
    wrk.method = "POST"
    wrk.body = f:read("*a")
    f:close()
    if args[2] ~= nil and args[2] ~= "" then
        wrk.headers["Inference-Header-Content-Length"] = args[2]
        wrk.headers["Content-Type"] = "application/octet-stream"
    else
        wrk.headers["Content-Type"] = "application/json"
    end
end

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
