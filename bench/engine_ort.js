// SPDX-License-Identifier: Apache-2.0
//
// ONNX Runtime peer for bench/engine.py, through onnxruntime-node.
//
//   node engine_ort.js job.json
//
// job.json: {"model": path, "threads": 2, "repeat": N, "warmup": W,
//            "inputs": [{"name", "dtype": "float32"|"int64", "shape",
//                        "file": raw little-endian data}],
//            "outputs_dir": optional: write each output as <name>.bin/.json,
//            "optimization": ORT's graphOptimizationLevel, default "all";
//            "disabled" runs a QDQ model as the ONNX spec reads it: each
//            DequantizeLinear, the float op, each QuantizeLinear)}
// Prints one JSON line: {"latencies_ms": [...]} (per run, after warm-up),
// "cpu_ms" (the process's CPU time in each run: with one intra-op thread,
// the run's cost less the time other processes held the core),
// with "base_rss_mb" (node's VmRSS before the session) and "peak_rss_mb"
// (VmHWM at the end) to compare with slimserve-infer's peak_rss_mb.
'use strict';

const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

function tensorOf(spec) {
    const buf = fs.readFileSync(spec.file);
    const ab = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length);
    const data = spec.dtype === 'int64' ? new BigInt64Array(ab)
        : spec.dtype === 'int32' ? new Int32Array(ab) : new Float32Array(ab);
    return new ort.Tensor(spec.dtype, data, spec.shape);
}

function statusMb(key) {
    const m = fs.readFileSync('/proc/self/status', 'utf8')
        .match(new RegExp('^' + key + ':\\s+(\\d+) kB', 'm'));
    return m ? Number(m[1]) / 1024 : null;
}

async function main() {
    const job = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
    const baseRss = statusMb('VmRSS');
    const threads = job.threads || 2;
    const session = await ort.InferenceSession.create(job.model, {
        intraOpNumThreads: threads,
        interOpNumThreads: 1,
        executionMode: 'sequential',
        graphOptimizationLevel: job.optimization || 'all',
    });
    const feeds = {};
    for (const spec of job.inputs)
        feeds[spec.name] = tensorOf(spec);
    let out = null;
    for (let i = 0; i < (job.warmup || 0); i++)
        out = await session.run(feeds);
    const lat = [], cpu = [];
    for (let i = 0; i < (job.repeat || 1); i++) {
        const c0 = process.cpuUsage();
        const t0 = process.hrtime.bigint();
        out = await session.run(feeds);
        lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
        const c = process.cpuUsage(c0);
        cpu.push((c.user + c.system) / 1e3);
    }
    if (job.outputs_dir) {
        for (const [name, t] of Object.entries(out)) {
            const d = t.data;
            fs.writeFileSync(path.join(job.outputs_dir, name + '.bin'),
                Buffer.from(d.buffer, d.byteOffset, d.byteLength));
            fs.writeFileSync(path.join(job.outputs_dir, name + '.json'),
                JSON.stringify({type: t.type, dims: t.dims}));
        }
    }
    process.stdout.write(JSON.stringify({latencies_ms: lat, cpu_ms: cpu,
        base_rss_mb: baseRss, peak_rss_mb: statusMb('VmHWM')}) + '\n');
}

main().catch((e) => {
    process.stderr.write('engine_ort.js: ' + (e && e.stack || e) + '\n');
    process.exit(1);
});
