// Load client for benches/realtime.sh: holds CLIENTS server-sent-event connections to
// one server (raw sockets, so the client side stays small), reports the server's RSS,
// then subscribes FANOUT of them to a collection and times record changes from the
// create request to each subscriber's receipt.
// Usage: node realtime_load.mjs BASE_URL SERVER_PID SUPERUSER_TOKEN COLLECTION
// Environment: CLIENTS (10000), FANOUT (1000), ROUNDS (5), CONCURRENCY (200).
import net from 'node:net';
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';

const [base, pidArg, token, collection] = process.argv.slice(2);
const clients = Number(process.env.CLIENTS ?? 10000);
const fanout = Math.min(Number(process.env.FANOUT ?? 1000), clients);
const rounds = Number(process.env.ROUNDS ?? 5);
const concurrency = Number(process.env.CONCURRENCY ?? 200);
const url = new URL(base);
const topic = `${collection}/*`;

function rssKiB(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
}

/** Opens one SSE connection; resolves with {id, socket, onEvent} after PB_CONNECT. */
function connect() {
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(url.port), url.hostname);
    let buffer = '';
    let conn = null;
    socket.setEncoding('utf8');
    socket.on('connect', () => {
      socket.write(`GET /api/realtime HTTP/1.1\r\nHost: ${url.host}\r\nAccept: text/event-stream\r\n\r\n`);
    });
    socket.on('data', (chunk) => {
      buffer += chunk;
      if (!conn) {
        const match = /event:PB_CONNECT\ndata:\{"clientId":"(\w+)"\}/.exec(buffer);
        if (match) {
          conn = { id: match[1], socket, onEvent: null };
          buffer = buffer.slice(match.index + match[0].length);
          resolve(conn);
        }
        return;
      }
      let at;
      while ((at = buffer.indexOf(`event:${topic}\n`)) >= 0) {
        buffer = buffer.slice(at + topic.length + 7);
        if (conn.onEvent) conn.onEvent();
      }
      if (buffer.length > 65536) buffer = buffer.slice(-1024);
    });
    socket.on('error', (err) => (conn ? null : reject(err)));
    socket.on('close', () => { if (conn) conn.closed = true; });
  });
}

async function pool(count, work) {
  const results = [];
  let next = 0;
  const workers = Array.from({ length: Math.min(concurrency, count) }, async () => {
    while (next < count) {
      const i = next++;
      results[i] = await work(i);
    }
  });
  await Promise.all(workers);
  return results;
}

const before = rssKiB(pidArg);
const start = performance.now();
const conns = await pool(clients, () => connect());
const connectSeconds = (performance.now() - start) / 1000;
await new Promise((r) => setTimeout(r, 500));
const held = conns.filter((c) => !c.closed).length;
const after = rssKiB(pidArg);

await pool(fanout, async (i) => {
  const response = await fetch(`${base}/api/realtime`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ clientId: conns[i].id, subscriptions: [topic] }),
  });
  if (response.status !== 204) throw new Error(`subscribe: ${response.status}`);
});

const latencies = [];
for (let round = 0; round < rounds; round++) {
  const received = [];
  const done = new Promise((resolve) => {
    const deadline = setTimeout(resolve, 10000);
    for (let i = 0; i < fanout; i++) {
      conns[i].onEvent = () => {
        received.push(performance.now() - t0);
        conns[i].onEvent = null;
        if (received.length === fanout) { clearTimeout(deadline); resolve(); }
      };
    }
  });
  const t0 = performance.now();
  const response = await fetch(`${base}/api/collections/${collection}/records`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: token },
    body: JSON.stringify({ title: `round ${round}` }),
  });
  if (response.status !== 200) throw new Error(`create: ${response.status}`);
  await done;
  latencies.push(received.sort((a, b) => a - b));
}
const all = latencies.flat().sort((a, b) => a - b);
const delivered = latencies.map((l) => l.length);
const p50 = all[Math.floor(all.length / 2)] ?? NaN;
const max = all[all.length - 1] ?? NaN;
console.log(JSON.stringify({
  held,
  connectSeconds: Number(connectSeconds.toFixed(2)),
  rssBeforeMiB: Number((before / 1024).toFixed(1)),
  rssMiB: Number((after / 1024).toFixed(1)),
  kibPerClient: Number(((after - before) / Math.max(held, 1)).toFixed(2)),
  fanout,
  deliveredPerRound: delivered,
  fanoutP50ms: Number(p50.toFixed(1)),
  fanoutMaxMs: Number(max.toFixed(1)),
}));
for (const c of conns) c.socket.destroy();
