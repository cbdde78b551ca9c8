// The official `phoenix` npm client and our hornbeam.js, side by side against the Python
// channels server (tests/py/test_channels_app.py under uvicorn on a free port): both join one
// room, see each other's presence, chat, and keep their connections up with heartbeats; then
// hornbeam.js reconnects and rejoins after the server restarts.
//
// Run: cd tests/node && npm ci && node --test
"use strict";

const {test, before, after} = require("node:test");
const assert = require("node:assert/strict");
const {spawn} = require("node:child_process");
const fs = require("node:fs");
const net = require("node:net");
const path = require("node:path");
const WebSocket = require("ws");
const Phoenix = require("phoenix");
const Hornbeam = require("../../python-bindings/python/hornbeam_channels/static/hornbeam.js");

const ROOT = path.resolve(__dirname, "..", "..");
const VENV_PYTHON = path.join(ROOT, ".venv", "bin", "python");
const PYTHON = process.env.HORNBEAM_PYTHON ||
  (fs.existsSync(VENV_PYTHON) ? VENV_PYTHON : "python3");

let port;
let server;

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const {port: p} = srv.address();
      srv.close(() => resolve(p));
    });
  });
}

function canConnect(p) {
  return new Promise((resolve) => {
    const sock = net.connect({port: p, host: "127.0.0.1"});
    sock.once("connect", () => { sock.destroy(); resolve(true); });
    sock.once("error", () => resolve(false));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function startServer(p) {
  const proc = spawn(PYTHON, ["-m", "uvicorn", "tests.py.test_channels_app:app", "--host",
                              "127.0.0.1", "--port", String(p), "--log-level", "warning"], {
    cwd: ROOT,
    env: {...process.env, PYTHONPATH: [ROOT, process.env.PYTHONPATH].filter(Boolean).join(path.delimiter)},
    stdio: ["ignore", "inherit", "inherit"],
  });
  const deadline = Date.now() + 20000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`uvicorn exited with ${proc.exitCode}`);
    if (await canConnect(p)) return proc;
    await sleep(50);
  }
  proc.kill("SIGKILL");
  throw new Error("uvicorn did not start in 20 s");
}

function stopServer(proc) {
  return new Promise((resolve) => {
    if (!proc || proc.exitCode !== null) return resolve();
    const timer = setTimeout(() => proc.kill("SIGKILL"), 10000);
    proc.once("exit", () => { clearTimeout(timer); resolve(); });
    process.kill(proc.pid, "SIGTERM");
  });
}

/** Resolves when check() is true, polling; rejects after ms with what. */
async function waitFor(check, what, ms = 5000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (check()) return;
    await sleep(20);
  }
  throw new Error(`timed out waiting for ${what}`);
}

function receive(push, status = "ok") {
  return new Promise((resolve, reject) => {
    push.receive(status, resolve);
    for (const other of ["ok", "error", "timeout"].filter((s) => s !== status)) {
      push.receive(other, (resp) => reject(new Error(`${other}: ${JSON.stringify(resp)}`)));
    }
  });
}

/** A client (either library) joined to topic with presence and message capture. */
function makeClient(lib, username, topic, opts = {}) {
  const logs = [];
  const socket = new lib.Socket(`ws://127.0.0.1:${port}/ws`, {
    transport: WebSocket,
    params: {token: "node"},
    heartbeatIntervalMs: 200,
    logger: (kind, msg) => logs.push(`${kind}: ${msg}`),
    ...opts,
  });
  const client = {socket, logs, messages: [], typing: [], users: [], joins: 0, closes: 0, opens: 0};
  socket.onOpen(() => { client.opens += 1; });
  socket.onClose(() => { client.closes += 1; });
  client.channel = socket.channel(topic, {username});
  client.presence = new lib.Presence(client.channel);
  client.presence.onSync(() => {
    client.users = client.presence.list((id, {metas}) => metas[0].username).sort();
  });
  client.channel.on("new_msg", (msg) => client.messages.push(msg));
  client.channel.on("typing", (msg) => client.typing.push(msg));
  client.joined = receive(client.channel.join());
  client.channel.joinPush.receive("ok", () => { client.joins += 1; });
  socket.connect();
  return client;
}

before(async () => {
  port = await freePort();
  server = await startServer(port);
});

after(async () => {
  await stopServer(server);
});

test("phoenix and hornbeam.js join, see each other, chat and keep heartbeats", async () => {
  const topic = `room:node${Date.now()}`;
  const phx = makeClient(Phoenix, "phoenix-user", topic);
  const hb = makeClient(Hornbeam, "hornbeam-user", topic);
  try {
    const [phxReply, hbReply] = await Promise.all([phx.joined, hb.joined]);
    const room = topic.split(":")[1];
    assert.deepEqual(phxReply, {room_id: room, message: `Welcome to ${room}!`});
    assert.deepEqual(hbReply, phxReply);

    const both = ["hornbeam-user", "phoenix-user"];
    await waitFor(() => JSON.stringify(phx.users) === JSON.stringify(both), "phoenix presence");
    await waitFor(() => JSON.stringify(hb.users) === JSON.stringify(both), "hornbeam presence");

    assert.deepEqual(await receive(phx.channel.push("new_msg", {body: "hi from phoenix"})),
                     {status: "ok"});
    await waitFor(() => hb.messages.length === 1, "message at hornbeam.js");
    assert.deepEqual(hb.messages[0], {username: "phoenix-user", body: "hi from phoenix"});

    assert.deepEqual(await receive(hb.channel.push("new_msg", {body: "hi from hornbeam"})),
                     {status: "ok"});
    await waitFor(() => phx.messages.length === 1, "message at phoenix");
    assert.deepEqual(phx.messages[0], {username: "hornbeam-user", body: "hi from hornbeam"});
    // broadcast_from: nobody got their own message back.
    assert.equal(hb.messages.length, 1);
    assert.equal(phx.messages.length, 1);

    hb.channel.push("typing", {typing: true});
    await waitFor(() => phx.typing.length === 1, "typing at phoenix");
    assert.deepEqual(phx.typing[0], {username: "hornbeam-user", typing: true});

    assert.deepEqual(await receive(hb.channel.push("new_msg", {body: ""}), "error"),
                     {reason: "empty message"});
    const history = await receive(phx.channel.push("get_history", {}));
    assert.deepEqual(history.messages.map((m) => m.body), ["hi from phoenix", "hi from hornbeam"]);

    // Heartbeats every 200 ms in both families: five answered for each client (counted, not
    // waited for by the clock), and nobody reconnected meanwhile.
    const answered = (c, topic) => c.logs.filter((l) => l.startsWith(`receive: ok ${topic} `)).length;
    await waitFor(() => answered(phx, "phoenix") >= 5 && answered(hb, "hornbeam") >= 5,
                  "five answered heartbeats per client", 10000);
    assert.equal(phx.opens, 1);
    assert.equal(hb.opens, 1);
    assert.equal(phx.closes, 0);
    assert.equal(hb.closes, 0);

    // hornbeam.js leaves: phoenix sees the user go.
    await receive(hb.channel.leave());
    await waitFor(() => JSON.stringify(phx.users) === JSON.stringify(["phoenix-user"]),
                  "phoenix presence after leave");
  } finally {
    phx.socket.disconnect();
    hb.socket.disconnect();
  }
});

test("hornbeam.js reconnects and rejoins after the server restarts", async () => {
  const topic = `room:restart${Date.now()}`;
  const hb = makeClient(Hornbeam, "comeback", topic,
                        {reconnectAfterMs: () => 100, rejoinAfterMs: () => 100});
  let phxWatcher = null;
  try {
    await hb.joined;
    await waitFor(() => hb.users.includes("comeback"), "own presence");
    await stopServer(server);
    await waitFor(() => hb.closes >= 1, "the client noticing the server is gone");
    server = await startServer(port);
    await waitFor(() => hb.opens >= 2 && hb.joins >= 2, "reconnect and rejoin", 10000);
    // The new server knows the rejoined user: a phoenix client sees it in presence.
    phxWatcher = makeClient(Phoenix, "watcher", topic);
    await phxWatcher.joined;
    await waitFor(() => JSON.stringify(phxWatcher.users) === JSON.stringify(["comeback", "watcher"]),
                  "presence after rejoin");
    await waitFor(() => JSON.stringify(hb.users) === JSON.stringify(["comeback", "watcher"]),
                  "hornbeam.js presence after rejoin");
  } finally {
    hb.socket.disconnect();
    if (phxWatcher) phxWatcher.socket.disconnect();
  }
});

test("hornbeam.js drops a connection whose heartbeats go unanswered, then rejoins", async () => {
  const topic = `room:frozen${Date.now()}`;
  const hb = makeClient(Hornbeam, "patient", topic,
                        {reconnectAfterMs: () => 100, rejoinAfterMs: () => 100});
  try {
    await hb.joined;
    // A frozen server keeps the TCP connection open but answers nothing.
    process.kill(server.pid, "SIGSTOP");
    try {
      await waitFor(() => hb.logs.some((l) => l.includes("heartbeat timeout")),
                    "the heartbeat timeout", 3000);
    } finally {
      process.kill(server.pid, "SIGCONT");
    }
    await waitFor(() => hb.opens >= 2 && hb.joins >= 2, "reconnect and rejoin", 10000);
    assert.deepEqual(await receive(hb.channel.push("get_history", {})), {messages: []});
  } finally {
    hb.socket.disconnect();
  }
});
