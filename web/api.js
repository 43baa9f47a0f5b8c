// api.js — the product API over fetch: JSON calls with OpenAI-shaped errors, quota headers,
// and chat answers streamed as server-sent events that resume after a dropped connection
// (Last-Event-ID = the bytes of the answer already shown).

export class ApiError extends Error {
  constructor(status, body, headers) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || null;
    this.param = e.param || null;
    this.exceeded = e.exceeded || null;
    const ra = headers && headers.get('Retry-After');
    this.retryAfter = ra ? parseInt(ra, 10) : null;
  }
}

// Listeners told about the caller's remaining quota (from X-RateLimit-* headers).
const quotaListeners = [];
export function onQuota(fn) { quotaListeners.push(fn); }

function noteQuota(headers) {
  const rl = headers.get('X-RateLimit-Limit-Requests');
  if (rl === null) return;
  const q = {
    requests_limit: +rl,
    requests_left: +headers.get('X-RateLimit-Remaining-Requests'),
    tokens_limit: +headers.get('X-RateLimit-Limit-Tokens'),
    tokens_left: +headers.get('X-RateLimit-Remaining-Tokens'),
  };
  for (const fn of quotaListeners) fn(q);
}

async function errorFrom(resp) {
  let body = null;
  try { body = await resp.json(); } catch { /* not JSON */ }
  return new ApiError(resp.status, body, resp.headers);
}

// One JSON call. Resolves to the parsed body (null for 204); rejects with ApiError, or with a
// TypeError when the network failed.
export async function api(method, path, body, extraHeaders) {
  const init = { method, headers: { Accept: 'application/json', ...(extraHeaders || {}) },
                 credentials: 'same-origin' };
  if (body !== undefined && !(body instanceof Blob)) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  } else if (body instanceof Blob) {
    init.body = body;
  }
  const resp = await fetch(path, init);
  noteQuota(resp.headers);
  if (!resp.ok) throw await errorFrom(resp);
  if (resp.status === 204) return null;
  const type = resp.headers.get('Content-Type') || '';
  return type.includes('json') ? resp.json() : null;
}

// Splits an SSE byte stream into events {id, data}; comment lines (keep-alives) call onAlive.
async function* sseEvents(resp, onAlive) {
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      onAlive();
      buf += dec.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let id = null;
        const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith('id:')) id = line.slice(3).trim();
          else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        }
        if (!data.length) continue;
        let obj;
        try { obj = JSON.parse(data.join('\n')); } catch { continue; }
        yield { id, data: obj };
      }
    }
  } finally {
    reader.releaseLock();
  }
}

const IDLE_MS = 45000; // no byte (not even a keep-alive) for this long: the connection is dead

// Streams one answer. `start` is a function returning the first fetch (POST of a turn, or the
// GET of a resume). Calls h.start(data), h.delta(text, eventId), h.done(data), h.error(data).
// A connection that drops before `done` is resumed with Last-Event-ID (up to 8 tries, backing
// off). Resolves when the answer has ended (or was already over: 204). Rejects with ApiError
// when the server refused the turn before it started.
export async function streamAnswer(conversationId, start, h, opts = {}) {
  let messageId = opts.messageId || null;
  let lastId = opts.lastEventId || null;
  let tries = 0;
  let first = true;
  for (;;) {
    const ctl = new AbortController();
    let timer = null;
    const alive = () => { clearTimeout(timer); timer = setTimeout(() => ctl.abort(), IDLE_MS); };
    let resp;
    try {
      alive();
      if (first && start) {
        resp = await start(ctl.signal);
      } else {
        const headers = { Accept: 'text/event-stream' };
        if (lastId) headers['Last-Event-ID'] = lastId;
        resp = await fetch(`/api/v1/conversations/${conversationId}/messages/${messageId}/stream`,
                           { headers, signal: ctl.signal, credentials: 'same-origin' });
      }
      noteQuota(resp.headers);
      if (resp.status === 204) { clearTimeout(timer); h.done && h.done(null); return; }
      if (!resp.ok) {
        clearTimeout(timer);
        const err = await errorFrom(resp);
        if (first || resp.status < 500) throw err;
        throw new TypeError(err.message); // a 5xx while resuming: try again
      }
      first = false;
      for await (const ev of sseEvents(resp, alive)) {
        const d = ev.data;
        if (d.type === 'start') {
          messageId = d.assistant_message_id;
          h.start && h.start(d);
        } else if (d.type === 'delta') {
          lastId = ev.id;
          h.delta && h.delta(d.text || '', ev.id);
          tries = 0;
        } else if (d.type === 'error') {
          h.error && h.error(d);
        } else if (d.type === 'done') {
          clearTimeout(timer);
          h.done && h.done(d);
          return;
        }
      }
      throw new TypeError('the stream ended early');
    } catch (e) {
      clearTimeout(timer);
      if (e instanceof ApiError) throw e;
      if (!messageId || ++tries > 8) throw e;
      first = false;
      h.reconnecting && h.reconnecting(tries);
      await new Promise((res) => setTimeout(res, Math.min(400 * 2 ** (tries - 1), 5000)));
    }
  }
}

// A POST whose answer is an event stream (a turn or a regeneration).
export function postStream(path, body) {
  return (signal) => fetch(path, {
    method: 'POST', signal, credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', Accept: 'text/event-stream' },
    body: JSON.stringify(body || {}),
  });
}
