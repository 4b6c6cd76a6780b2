// pushbench live demo: one real browser client per push technique, side by side.
//
// Every panel starts after the same id (the topic's newest when the page loaded), so all five
// should receive the same consecutive ids. Each resumes with the cursor EPOCH-ID, so that a
// restart of the server is a reset it is told of (ids count from 1 again in each life of the
// server), never a silent mix of two lives. For automation, each panel keeps data-received,
// data-first-id, data-last-id, data-epoch, data-resets, data-gaps, data-dups, data-requests
// and data-reconnects up to date on every event; tests/demo.rs reads them through the
// DevTools protocol.
"use strict";

const WINDOW = 100; // latency percentiles over the last 100 events
const LATEST = 6; // events listed per panel
const LONGPOLL_TIMEOUT_MS = 25000;
const RETRY_FIRST_MS = 250; // first reconnect delay of the clients reconnected in code
const RETRY_MAX_MS = 5000;
const SETTINGS_REFRESH_MS = 5000;

const demo = { topic: "demo", pollIntervalMs: 1000, settings: null };

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// UTF-8 length of a string, without encoding it.
function utf8Length(s) {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c < 0xdc00) { n += 4; i++; }
    else n += 3;
  }
  return n;
}

// Bytes of a response head as it crossed the wire: status line, headers, blank line.
function headLength(resp) {
  let n = `HTTP/1.1 ${resp.status} ${resp.statusText}\r\n`.length + 2;
  resp.headers.forEach((value, name) => { n += name.length + value.length + 4; });
  return n;
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(2)} MiB`;
}

function formatMs(ms) {
  if (!Number.isFinite(ms)) return "–";
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length) - 1;
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank))];
}

// One technique's panel: its counters, its latency window, and how it draws them.
class Panel {
  constructor(section, epoch, startAfter) {
    this.el = section;
    this.name = section.dataset.transport;
    this.epoch = epoch;
    this.lastId = startAfter;
    this.resets = 0;
    this.received = 0;
    this.gaps = 0;
    this.dups = 0;
    this.requests = 0;
    this.bytes = 0;
    this.reconnects = 0;
    this.latencies = [];
    this.latest = [];
    this.retryMs = RETRY_FIRST_MS;
    this.droppedAt = null;
    this.resume = "";
    this.state = { ok: false, text: "starting" };
    const body = document.getElementById("panel-body").content.cloneNode(true);
    section.querySelector(".api").after(body);
    this.fields = {};
    for (const el of section.querySelectorAll("[data-field]")) this.fields[el.dataset.field] = el;
    this.canvas = section.querySelector("canvas");
    this.list = section.querySelector(".events");
    this.dot = section.querySelector(".dot");
    this.stateText = section.querySelector(".state-text");
    section.dataset.firstId = String(startAfter + 1);
    this.renderQueued = false;
    this.sync();
  }

  // One event, in whatever shape its transport delivered it.
  event(id, data) {
    const now = Date.now();
    if (id <= this.lastId) {
      this.dups++;
      this.sync();
      return;
    }
    if (id > this.lastId + 1) this.gaps += id - this.lastId - 1;
    this.lastId = id;
    this.received++;
    let latency = NaN;
    try {
      latency = Math.max(0, now - JSON.parse(data).sent);
    } catch (_) { /* a payload someone else published: no timestamp */ }
    if (Number.isFinite(latency)) {
      this.latencies.push(latency);
      if (this.latencies.length > WINDOW) this.latencies.shift();
    }
    this.latest.unshift({ id, latency, size: utf8Length(data) });
    if (this.latest.length > LATEST) this.latest.pop();
    if (this.droppedAt !== null) {
      const after = ((now - this.droppedAt) / 1000).toFixed(2);
      this.resume = `resumed ${after} s after the drop, at id ${id}`;
      this.droppedAt = null;
    }
    this.sync();
  }

  // Where to resume: EPOCH-ID, so that a restarted server knows the id is from its last life.
  cursor() { return `${this.epoch}-${this.lastId}`; }

  // The server's life: a stream's or WebSocket's first message, or a poll answer's members.
  // A reset means the cursor named another life: this life's events follow from its first.
  life(epoch, reset) {
    if (reset) {
      this.resets++;
      this.lastId = 0;
      this.resume = `the server restarted (epoch ${epoch}); reading its events from the first`;
    }
    this.epoch = epoch;
    this.sync();
  }

  // A gap signal from the server: ids from..to will never come.
  gap(from, to) {
    this.gaps += to - from + 1;
    if (to > this.lastId) this.lastId = to;
    this.sync();
  }

  // A batch answer of short or long polling.
  batch(body) {
    if (body.epoch) this.life(body.epoch, body.reset === true);
    if (body.gap) this.gap(body.gap.from, body.gap.to);
    for (const e of body.events) this.event(e.id, e.data);
  }

  request() { this.requests++; this.sync(); }
  addBytes(n) { this.bytes += n; this.sync(); }

  connected(text) {
    this.retryMs = RETRY_FIRST_MS;
    this.setState(true, text);
  }

  // The connection was lost and will be reopened (by the browser or by this page's code).
  lost(text) {
    this.reconnects++;
    this.setState(false, text);
  }

  // How long to wait before reopening in code: doubling, so a dead server is not hammered.
  nextRetry() {
    const ms = this.retryMs;
    this.retryMs = Math.min(RETRY_MAX_MS, this.retryMs * 2);
    return ms;
  }

  setState(ok, text) {
    this.state = { ok, text };
    this.el.dataset.state = ok ? "connected" : "reconnecting";
    this.sync();
  }

  markDrop(at) {
    this.droppedAt = at;
    this.resume = "waiting for the first event after the drop…";
    this.sync();
  }

  // Data attributes change at once (automation reads them); the drawing waits for a frame.
  sync() {
    const d = this.el.dataset;
    d.received = String(this.received);
    d.lastId = String(this.lastId);
    d.epoch = this.epoch;
    d.resets = String(this.resets);
    d.gaps = String(this.gaps);
    d.dups = String(this.dups);
    d.requests = String(this.requests);
    d.reconnects = String(this.reconnects);
    if (!this.renderQueued) {
      this.renderQueued = true;
      requestAnimationFrame(() => { this.renderQueued = false; this.render(); });
    }
  }

  render() {
    const sorted = [...this.latencies].sort((a, b) => a - b);
    const f = this.fields;
    f.received.textContent = this.received.toLocaleString("en");
    f.p50.textContent = formatMs(percentile(sorted, 50));
    f.p99.textContent = formatMs(percentile(sorted, 99));
    f.requests.textContent = this.requests.toLocaleString("en");
    f.bytes.textContent = formatBytes(this.bytes);
    f.reconnects.textContent = String(this.reconnects);
    f["last-id"].textContent = String(this.lastId);
    f.gaps.textContent = String(this.gaps);
    f.dups.textContent = String(this.dups);
    f.resets.textContent = String(this.resets);
    f.gaps.classList.toggle("bad", this.gaps > 0);
    f.dups.classList.toggle("bad", this.dups > 0);
    f.resume.textContent = this.resume;
    this.dot.classList.toggle("ok", this.state.ok);
    this.stateText.textContent = this.state.text;
    this.list.replaceChildren(...this.latest.map((e) => {
      const li = document.createElement("li");
      li.innerHTML = "<b></b><span></span><span></span>";
      li.children[0].textContent = `#${e.id}`;
      li.children[1].textContent = formatMs(e.latency);
      li.children[2].textContent = `${e.size} B`;
      return li;
    }));
    this.drawSpark();
  }

  // The latency of the last 100 events as bars, scaled to the largest.
  drawSpark() {
    const c = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = c.clientWidth * ratio;
    const height = c.clientHeight * ratio;
    if (width === 0) return;
    if (c.width !== width) c.width = width;
    if (c.height !== height) c.height = height;
    const g = c.getContext("2d");
    g.clearRect(0, 0, width, height);
    const values = this.latencies;
    const max = Math.max(10, ...values);
    const bar = width / WINDOW;
    g.fillStyle = getComputedStyle(this.el).getPropertyValue("--accent") || "#444";
    values.forEach((v, i) => {
      const h = Math.max(ratio, (v / max) * (height - 12 * ratio));
      g.fillRect((WINDOW - values.length + i) * bar, height - h, Math.max(1, bar - ratio), h);
    });
    g.fillStyle = "#6b7280";
    g.font = `${10 * ratio}px system-ui, sans-serif`;
    g.textBaseline = "top";
    g.fillText(`max ${formatMs(max)}`, 2 * ratio, 0);
  }
}

const url = (path, p) => `${path}?topic=${encodeURIComponent(demo.topic)}&after=${p.cursor()}`;

// Short polling: ask every interval; a capped batch (last_id beyond it) is fetched again at once.
async function runPoll(p) {
  for (;;) {
    const started = Date.now();
    let more = false;
    try {
      p.request();
      const resp = await fetch(url("/poll", p), { cache: "no-store" });
      const text = await resp.text();
      p.addBytes(headLength(resp) + utf8Length(text));
      if (!resp.ok) throw new Error(`HTTP ${resp.status}: ${text}`);
      const body = JSON.parse(text);
      p.batch(body);
      p.connected(`polling every ${demo.pollIntervalMs} ms`);
      more = body.events.length > 0 && body.last_id > p.lastId;
    } catch (err) {
      p.lost(`request failed (${err.message}); polling again`);
      await sleep(p.nextRetry());
      continue;
    }
    if (!more) await sleep(Math.max(0, demo.pollIntervalMs - (Date.now() - started)));
  }
}

// Long polling: one held request at a time; a failed one is retried in code with the last id.
async function runLongPoll(p) {
  const HELD = "request held until an event exists";
  for (;;) {
    try {
      p.request();
      // While retrying, the panel keeps saying why until a request succeeds.
      if (p.retryMs === RETRY_FIRST_MS) p.setState(true, HELD);
      const resp = await fetch(`${url("/longpoll", p)}&timeout_ms=${LONGPOLL_TIMEOUT_MS}`,
        { cache: "no-store" });
      const text = await resp.text();
      p.addBytes(headLength(resp) + utf8Length(text));
      if (!resp.ok) throw new Error(`HTTP ${resp.status}: ${text}`);
      p.batch(JSON.parse(text));
      p.connected(HELD);
    } catch (err) {
      p.lost(`held request cut (${err.message}); code retries after=${p.cursor()}`);
      await sleep(p.nextRetry());
    }
  }
}

// HTTP streaming: read NDJSON lines from one endless response; reopen in code when it ends.
async function runStream(p) {
  for (;;) {
    try {
      p.request();
      const resp = await fetch(url("/stream", p), { cache: "no-store" });
      p.addBytes(headLength(resp));
      if (!resp.ok) throw new Error(`HTTP ${resp.status}: ${await resp.text()}`);
      p.connected("one response, streaming");
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        p.addBytes(value.byteLength);
        buffer += decoder.decode(value, { stream: true });
        let newline;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, newline);
          buffer = buffer.slice(newline + 1);
          if (line === "") continue; // keep-alive
          const item = JSON.parse(line);
          if (item.epoch) p.life(item.epoch, item.reset === true);
          else if (item.gap) p.gap(item.gap.from, item.gap.to);
          else p.event(item.id, item.data);
        }
      }
      p.lost(`stream ended; code reopens after=${p.cursor()}`);
    } catch (err) {
      // A line cut in half is dropped with the connection: the resume starts after the last
      // whole event.
      p.lost(`stream cut (${err.message}); code reopens after=${p.cursor()}`);
    }
    await sleep(p.nextRetry());
  }
}

// SSE: EventSource reconnects by itself and sends Last-Event-ID; the page only watches.
function runSse(p) {
  const retryHint = utf8Length("retry: 1000\n\n");
  const open = () => {
    p.request();
    const es = new EventSource(url("/sse", p));
    es.onopen = () => {
      // The retry hint, then the hello: `id: EPOCH-ID` and a blank line, which sets the
      // browser's last event id without dispatching an event.
      p.addBytes(retryHint + utf8Length(`id: ${p.cursor()}\n\n`));
      p.connected("EventSource open");
    };
    // Ids are EPOCH-ID; the browser keeps the last one and sends it back as Last-Event-ID.
    es.onmessage = (e) => {
      p.addBytes(utf8Length(`id: ${e.lastEventId}\ndata: ${e.data}\n\n`));
      const [epoch, id] = e.lastEventId.split("-");
      p.epoch = epoch;
      p.event(Number(id), e.data);
    };
    es.addEventListener("reset", (e) => {
      p.addBytes(utf8Length(`event: reset\nid: ${e.lastEventId}\ndata: ${e.data}\n\n`));
      p.life(JSON.parse(e.data).epoch, true);
    });
    es.addEventListener("gap", (e) => {
      p.addBytes(utf8Length(`event: gap\ndata: ${e.data}\n\n`));
      const g = JSON.parse(e.data);
      p.gap(g.from, g.to);
    });
    es.onerror = () => {
      if (es.readyState === EventSource.CONNECTING) {
        // The browser is already reconnecting: the next request is its own.
        p.lost(`EventSource reconnects by itself, Last-Event-ID: ${p.cursor()}`);
        p.request();
      } else {
        // A non-200 answer is fatal to EventSource: only code can try again.
        es.close();
        p.lost("EventSource gave up; code reopens it");
        setTimeout(open, p.nextRetry());
      }
    };
  };
  open();
}

// WebSocket: the API never reconnects, so the page reopens it with the last id.
function runWs(p) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const open = () => {
    p.request();
    const ws = new WebSocket(`${scheme}://${location.host}${url("/ws", p)}`);
    ws.onopen = () => p.connected("WebSocket open");
    ws.onmessage = (e) => {
      const n = utf8Length(e.data);
      p.addBytes(n + (n < 126 ? 2 : 4)); // the frame header
      const m = JSON.parse(e.data);
      if (m.epoch) p.life(m.epoch, m.reset === true);
      else if (m.gap) p.gap(m.gap.from, m.gap.to);
      else if (m.id !== undefined) p.event(m.id, m.data);
    };
    ws.onclose = (e) => {
      p.lost(`closed (code ${e.code}); code reopens after=${p.cursor()}`);
      setTimeout(open, p.nextRetry());
    };
  };
  open();
}

const CLIENTS = { poll: runPoll, longpoll: runLongPoll, stream: runStream, sse: runSse, ws: runWs };

const controls = document.getElementById("controls");
const notice = document.getElementById("notice");

function say(text, bad = false) {
  notice.textContent = text;
  notice.classList.toggle("bad", bad);
}

// Shows the server's settings in the controls, except in a field the user is editing.
function showSettings(settings) {
  demo.settings = settings;
  demo.pollIntervalMs = settings.poll_interval_ms;
  for (const input of controls.querySelectorAll("input")) {
    if (document.activeElement !== input) input.value = String(settings[input.name]);
  }
}

async function getConfig() {
  const resp = await fetch("/demo/config", { cache: "no-store" });
  if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
  return resp.json();
}

// Sends one changed setting; the server checks it and answers 400 with a reason if it is bad.
async function change(input) {
  try {
    const resp = await fetch("/demo/config", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ [input.name]: Number(input.value) }),
    });
    const body = await resp.json();
    if (!resp.ok) throw new Error(body.error || `HTTP ${resp.status}`);
    showSettings(body);
    say(`${input.name} is now ${body[input.name]}`);
  } catch (err) {
    say(`Not changed: ${err.message}`, true);
    if (demo.settings) input.value = String(demo.settings[input.name]);
  }
}

async function dropAll(button, panels) {
  button.disabled = true;
  try {
    const resp = await fetch("/demo/drop-all", { method: "POST" });
    const body = await resp.json();
    if (!resp.ok) throw new Error(body.error || `HTTP ${resp.status}`);
    const at = Date.now();
    for (const p of panels) p.markDrop(at);
    const time = new Date(at).toLocaleTimeString("en-GB");
    say(`${time}: the server cut ${body.connections} open connections. ` +
      "Watch which panels come back by themselves.");
  } catch (err) {
    say(`Drop failed: ${err.message}`, true);
  } finally {
    button.disabled = false;
  }
}

async function main() {
  let config;
  for (;;) {
    try {
      config = await getConfig();
      break;
    } catch (err) {
      say(`Cannot reach the demo server (${err.message}); retrying…`, true);
      await sleep(1000);
    }
  }
  say("");
  demo.topic = config.topic;
  showSettings(config);
  const panels = [...document.querySelectorAll("[data-transport]")]
    .map((section) => new Panel(section, config.epoch, config.last_id));
  for (const p of panels) CLIENTS[p.name](p);

  for (const input of controls.querySelectorAll("input")) {
    input.addEventListener("change", () => change(input));
  }
  controls.addEventListener("submit", (e) => e.preventDefault());
  const button = document.querySelector("[data-action=drop-all]");
  button.addEventListener("click", () => dropAll(button, panels));
  // Another tab may change the settings too.
  setInterval(() => getConfig().then(showSettings, () => {}), SETTINGS_REFRESH_MS);
}

main();
