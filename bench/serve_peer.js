// SPDX-License-Identifier: Apache-2.0
//
// The peer of bench/serve.py's scale part: the server a user would write
// instead of running slimserve.  Node's `http` module and onnxruntime-node,
// N worker processes through `cluster` (the primary accepts and hands
// connections round-robin, Node's default on Linux), one session.run per
// request, KServe V2 JSON in and out.  No batching, no binary tensors: the
// plain, idiomatic version.
//
//   node serve_peer.js --port P [--workers 2] [--intra 1] NAME=MODEL.onnx...
//
// POST /v2/models/NAME/infer   {"inputs": [{"name", "shape", "datatype":
//                               "FP32", "data": [...]}]} -> {"model_name",
//                               "outputs": [{"name", "shape", "datatype",
//                               "data"}]}
// GET  /v2/health/ready        200 once this worker's sessions loaded
//
// The primary prints "peer listening port=P workers=N" when every worker
// listens, and exits when a worker dies (the bench sees it as a failure).
// intraOpNumThreads defaults to 1: with one worker per core the cores are
// used by the workers, and more intra-op threads per worker would make
// them fight over the same cores.
'use strict';

const cluster = require('cluster');
const http = require('http');

function parseArgs(argv) {
    const a = {port: 0, workers: 2, intra: 1, models: {}};
    for (let i = 0; i < argv.length; i++) {
        const k = argv[i];
        if (k === '--port') a.port = Number(argv[++i]);
        else if (k === '--workers') a.workers = Number(argv[++i]);
        else if (k === '--intra') a.intra = Number(argv[++i]);
        else if (k.includes('=')) {
            const j = k.indexOf('=');
            a.models[k.slice(0, j)] = k.slice(j + 1);
        } else throw new Error('unknown argument ' + k);
    }
    if (!a.port || !Object.keys(a.models).length)
        throw new Error('usage: serve_peer.js --port P [--workers N] ' +
                        '[--intra N] NAME=MODEL.onnx...');
    return a;
}

function reply(res, status, obj) {
    const text = JSON.stringify(obj);
    res.writeHead(status, {'Content-Type': 'application/json',
                           'Content-Length': Buffer.byteLength(text)});
    res.end(text);
}

async function worker(a) {
    const ort = require('onnxruntime-node');
    const sessions = {};
    for (const [name, file] of Object.entries(a.models))
        sessions[name] = await ort.InferenceSession.create(file, {
            intraOpNumThreads: a.intra,
            interOpNumThreads: 1,
            executionMode: 'sequential',
            graphOptimizationLevel: 'all',
        });
    const route = /^\/v2\/models\/([^/]+)\/infer$/;

    async function infer(name, raw, res) {
        let req;
        try {
            req = JSON.parse(raw);
        } catch (e) {
            return reply(res, 400, {error: 'bad JSON: ' + e.message});
        }
        const feeds = {};
        for (const inp of req.inputs || []) {
            if (inp.datatype !== 'FP32')
                return reply(res, 400, {error: 'FP32 only'});
            const data = Array.isArray(inp.data[0]) ? inp.data.flat(Infinity)
                : inp.data;
            feeds[inp.name] = new ort.Tensor('float32',
                Float32Array.from(data), inp.shape);
        }
        let out;
        try {
            out = await sessions[name].run(feeds);
        } catch (e) {
            return reply(res, 400, {error: String(e.message || e)});
        }
        const outputs = Object.entries(out).map(([n, t]) => ({
            name: n, datatype: 'FP32', shape: t.dims,
            data: Array.from(t.data)}));
        const body = {model_name: name, outputs};
        if (req.id !== undefined) body.id = req.id;
        reply(res, 200, body);
    }

    const server = http.createServer((req, res) => {
        const m = route.exec(req.url);
        if (req.method === 'GET' && req.url === '/v2/health/ready')
            return reply(res, 200, {ready: true});
        if (req.method !== 'POST' || !m || !sessions[m[1]]) {
            req.resume();
            return reply(res, 404, {error: 'not found'});
        }
        const chunks = [];
        req.on('data', (c) => chunks.push(c));
        req.on('end', () => {
            infer(m[1], Buffer.concat(chunks).toString('utf8'), res)
                .catch((e) => reply(res, 500, {error: String(e)}));
        });
    });
    server.listen(a.port, '127.0.0.1', () => process.send('listening'));
}

function primary(a) {
    let listening = 0;
    let stopping = false;
    for (let i = 0; i < a.workers; i++) {
        cluster.fork().on('message', (msg) => {
            if (msg === 'listening' && ++listening === a.workers)
                process.stdout.write('peer listening port=' + a.port +
                                     ' workers=' + a.workers + '\n');
        });
    }
    cluster.on('exit', (w, code, signal) => {
        if (stopping)
            return;
        process.stderr.write('serve_peer.js: worker ' + w.process.pid +
                             ' died (' + (signal || code) + ')\n');
        process.exit(1);
    });
    const stop = () => {
        stopping = true;
        for (const w of Object.values(cluster.workers))
            w.process.kill('SIGTERM');
        process.exit(0);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
}

let args;
try {
    args = parseArgs(process.argv.slice(2));
} catch (e) {
    process.stderr.write('serve_peer.js: ' + e.message + '\n');
    process.exit(2);
}
if (cluster.isPrimary) {
    primary(args);
} else {
    worker(args).catch((e) => {
        process.stderr.write('serve_peer.js: ' + (e && e.stack || e) + '\n');
        process.exit(1);
    });
}
