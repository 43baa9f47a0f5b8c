// app.js — parley's web app: accounts, the conversation list, the chat view with streamed
// answers, branches and versions, model picker, settings, sharing and attachments. Talks only
// to the product API (/api/v1, see docs/api-*.md) through api.js.

import { api, ApiError, onQuota, postStream, streamAnswer } from './api.js';
import { fillIcons, icon } from './icons.js';
import { copyText, renderMarkdown } from './markdown.js';

const $ = (id) => document.getElementById(id);
const PAGE = 20;                // conversations per page of the list
const UPLOAD_MAX = 512 * 1024;  // the gateway's limit (413 beyond)
const TEXT_EXT = /\.(txt|md|markdown|csv|tsv|json|xml|ya?ml|toml|ini|log|c|h|cc|cpp|hpp|py|js|mjs|ts|go|rs|java|kt|rb|php|sh|sql|html|css)$/i;

const state = {
  me: null,
  models: [],
  convs: [],          // the list shown in the sidebar
  cursor: null,       // next page of the list (null: no more)
  loadingMore: false,
  query: '',          // search text ('' = the plain list)
  current: null,      // the open conversation (GET /api/v1/conversations/{id})
  newModel: '',       // model picked before the conversation exists
  opening: null,      // the conversation being opened (a promise)
  streaming: null,    // {convId, messageId, stopRequested}
  attachments: [],    // [{id?, name, size, error?, uploading}]
  authMode: 'login',
};

// --- small helpers --------------------------------------------------------------------------

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// A button; a label of the form ':name' draws that icon (then `aria` names it).
function button(label, cls, onClick, aria) {
  const b = el('button', cls);
  if (label.startsWith(':')) b.append(icon(label.slice(1)));
  else b.textContent = label;
  b.type = 'button';
  if (aria) b.setAttribute('aria-label', aria);
  b.addEventListener('click', onClick);
  return b;
}

let toastTimer = null;
function toast(text) {
  const t = $('toast');
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 2000);
}

function fmtTime(unix) {
  return new Date(unix * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

function limitName(code) {
  return code === 'tokens_per_day' ? 'daily token' : code === 'requests_per_minute' ? 'per-minute request' : 'usage';
}

// A person-readable sentence for an API or network error.
function describe(e) {
  if (!(e instanceof ApiError)) return 'The connection to parley failed. Check your network and try again.';
  if (e.status === 429) {
    const secs = e.retryAfter || 0;
    const when = secs ? ` It resets at ${fmtTime(Date.now() / 1000 + secs)} (in ${secs} s).` : '';
    return `You have reached your ${limitName(e.exceeded)} limit.${when}`;
  }
  if (e.status === 401) return 'Your session has ended. Log in again.';
  if (e.status === 503) return `${e.message} Try again in a moment.`;
  return e.message;
}

function showBanner(text, kind = 'error') {
  $('banner-text').textContent = text;
  $('banner').dataset.kind = kind;
  $('banner').hidden = false;
}
function hideBanner() { $('banner').hidden = true; }

function handleError(e) {
  if (e instanceof ApiError && e.status === 401) { showAuth(); return; }
  showBanner(describe(e));
}

// --- local memory: sibling ids, upload names, answers in progress ---------------------------

// The API numbers an answer's versions (sibling_index / sibling_count); the ids of the versions
// this browser has seen are kept per conversation so that < 2/3 > can switch between them.
function siblings(convId) {
  try { return JSON.parse(localStorage.getItem(`parley.sib.${convId}`)) || {}; } catch { return {}; }
}
function rememberSiblings(conv) {
  const reg = siblings(conv.id);
  for (const m of conv.messages || []) {
    const key = m.parent_id || 'root';
    reg[key] = reg[key] || {};
    if (Array.isArray(m.sibling_ids)) m.sibling_ids.forEach((id, i) => { reg[key][i + 1] = id; });
    reg[key][m.sibling_index] = m.id;
  }
  try { localStorage.setItem(`parley.sib.${conv.id}`, JSON.stringify(reg)); } catch { /* full */ }
}
function siblingId(convId, m, index) {
  if (Array.isArray(m.sibling_ids) && m.sibling_ids[index - 1]) return m.sibling_ids[index - 1];
  const reg = siblings(convId)[m.parent_id || 'root'] || {};
  return reg[index] || null;
}

function uploadNames() {
  try { return JSON.parse(localStorage.getItem('parley.uploads')) || {}; } catch { return {}; }
}
function rememberUpload(u) {
  const all = uploadNames();
  all[u.id] = u.filename;
  try { localStorage.setItem('parley.uploads', JSON.stringify(all)); } catch { /* full */ }
}

function saveProgress(mid, text, lastId) {
  try { sessionStorage.setItem(`parley.progress.${mid}`, JSON.stringify({ text, lastId })); } catch { /* full */ }
}
function loadProgress(mid) {
  try { return JSON.parse(sessionStorage.getItem(`parley.progress.${mid}`)); } catch { return null; }
}
function clearProgress(mid) { sessionStorage.removeItem(`parley.progress.${mid}`); }

function maxTokens() {
  const v = parseInt(localStorage.getItem('parley.maxTokens') || '', 10);
  return v > 0 ? v : undefined;
}

// --- accounts --------------------------------------------------------------------------------

function setAuthMode(mode) {
  state.authMode = mode;
  $('tab-login').setAttribute('aria-selected', String(mode === 'login'));
  $('tab-signup').setAttribute('aria-selected', String(mode === 'signup'));
  $('auth-submit').textContent = mode === 'login' ? 'Log in' : 'Create account';
  $('auth-password').autocomplete = mode === 'login' ? 'current-password' : 'new-password';
  $('auth-hint').hidden = mode === 'login';
  $('auth-form').setAttribute('aria-labelledby', mode === 'login' ? 'tab-login' : 'tab-signup');
  $('auth-error').textContent = '';
}

function authMessage(e) {
  if (!(e instanceof ApiError)) return describe(e);
  if (e.code === 'invalid_credentials' || (state.authMode === 'login' && e.status === 401)) return 'Wrong email or password.';
  if (e.code === 'signup_closed') return 'Sign-up is closed on this server. Ask its administrator for an account.';
  if (e.status === 409) return 'An account with this email already exists. Log in instead.';
  if (e.status === 429) {
    const mins = e.retryAfter ? Math.max(1, Math.ceil(e.retryAfter / 60)) : null;
    return `Too many failed log-ins. Try again${mins ? ` in ${mins} minute${mins > 1 ? 's' : ''}` : ' later'}.`;
  }
  return e.message;
}

async function submitAuth(ev) {
  ev.preventDefault();
  const email = $('auth-email').value.trim();
  const password = $('auth-password').value;
  if (!email || !password) { $('auth-error').textContent = 'Enter your email and password.'; return; }
  $('auth-submit').disabled = true;
  $('auth-error').textContent = '';
  try {
    await api('POST', `/api/v1/auth/${state.authMode}`, { email, password });
    $('auth-password').value = '';
    await boot();
  } catch (e) {
    $('auth-error').textContent = authMessage(e);
  } finally {
    $('auth-submit').disabled = false;
  }
}

function showAuth() {
  state.me = null;
  $('app').hidden = true;
  $('auth').hidden = false;
  $('auth-email').focus();
}

async function logout() {
  try { await api('POST', '/api/v1/auth/logout'); } catch { /* the session is gone anyway */ }
  state.current = null;
  history.replaceState(null, '', '/');
  showAuth();
}

// --- quota -----------------------------------------------------------------------------------

function showQuota(q) {
  if (!q) return;
  const parts = [];
  if (q.requests_limit) parts.push(`${q.requests_left}/${q.requests_limit} requests this minute`);
  if (q.tokens_limit) parts.push(`${Number(q.tokens_left).toLocaleString()}/${Number(q.tokens_limit).toLocaleString()} tokens today`);
  $('quota').textContent = parts.length ? `Left: ${parts.join(' · ')}` : '';
}

async function refreshQuota() {
  try { const r = await api('GET', '/api/v1/quota'); showQuota(r.quota); } catch { /* headers will do */ }
}

// --- models ----------------------------------------------------------------------------------

async function loadModels() {
  const sel = $('model');
  try {
    const r = await api('GET', '/api/v1/models');
    state.models = r.data.map((m) => m.id);
  } catch (e) {
    state.models = [];
    if (!(e instanceof ApiError && e.status === 401)) showBanner(describe(e));
  }
  sel.replaceChildren(...state.models.map((id) => { const o = el('option', '', id); o.value = id; return o; }));
  sel.disabled = state.models.length === 0;
  if (!state.newModel && state.models.length) state.newModel = state.models[0];
}

function showModel() {
  const sel = $('model');
  const want = state.current ? state.current.model || state.models[0] : state.newModel;
  if (want && !state.models.includes(want)) {
    const o = el('option', '', `${want} (not available)`);
    o.value = want;
    o.disabled = true;
    sel.append(o);
  }
  if (want) sel.value = want;
}

async function changeModel() {
  const model = $('model').value;
  if (!state.current) { state.newModel = model; return; }
  try {
    const c = await api('PATCH', `/api/v1/conversations/${state.current.id}`, { model });
    state.current.model = c.model;
    toast(`Model: ${c.model}`);
  } catch (e) {
    handleError(e);
    showModel();
  }
}

// --- the conversation list -------------------------------------------------------------------

function renderList() {
  const ul = $('conv-list');
  ul.replaceChildren(...state.convs.map(convItem));
  $('conv-empty').hidden = state.convs.length > 0;
  $('conv-empty').textContent = state.query ? 'No chat matches.' : 'No chats yet.';
  $('conv-more').textContent = state.cursor && !state.query ? 'Scroll for more…' : '';
}

function convItem(c) {
  const li = el('li', 'conv-item');
  li.dataset.id = c.id;
  const open = el('a', 'conv-open', c.title || 'New chat');
  open.href = `/?c=${c.id}`;
  open.title = c.title || 'New chat';
  if (state.current && state.current.id === c.id) {
    li.classList.add('current');
    open.setAttribute('aria-current', 'page');
  }
  open.addEventListener('click', (ev) => {
    if (ev.metaKey || ev.ctrlKey) return;
    ev.preventDefault();
    openConversation(c.id, true);
    closeSidebar();
  });
  const actions = el('span', 'conv-actions');
  actions.append(
    button(':pencil', 'icon', () => startRename(li, c), `Rename chat ${c.title || ''}`.trim()),
    button(':trash', 'icon', () => deleteConversation(c), `Delete chat ${c.title || ''}`.trim()),
  );
  li.append(open, actions);
  return li;
}

async function loadConversations(reset) {
  if (state.loadingMore) return;
  state.loadingMore = true;
  try {
    if (state.query) {
      const r = await api('GET', `/api/v1/conversations/search?q=${encodeURIComponent(state.query)}&limit=50`);
      state.convs = r.data;
      state.cursor = null;
    } else {
      const cur = reset ? '' : `&cursor=${encodeURIComponent(state.cursor)}`;
      const r = await api('GET', `/api/v1/conversations?limit=${PAGE}${cur}`);
      state.convs = reset ? r.data : state.convs.concat(r.data.filter((c) => !state.convs.some((x) => x.id === c.id)));
      state.cursor = r.next_cursor || null;
    }
    renderList();
  } catch (e) {
    handleError(e);
  } finally {
    state.loadingMore = false;
  }
  maybeLoadMore();
}

function maybeLoadMore() {
  const w = $('conv-list-wrap');
  if (!w.clientHeight) return; // not shown yet: boot() asks again
  if (state.cursor && !state.query && !state.loadingMore &&
      w.scrollTop + w.clientHeight >= w.scrollHeight - 80) {
    loadConversations(false);
  }
}

let searchTimer = null;
function onSearch() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => {
    state.query = $('search').value.trim();
    loadConversations(true);
  }, 250);
}

function startRename(li, c) {
  const input = el('input', 'rename-input');
  input.value = c.title || '';
  input.setAttribute('aria-label', 'New title');
  const link = li.querySelector('.conv-open');
  link.hidden = true;
  li.insertBefore(input, link);
  input.focus();
  input.select();
  let done = false;
  const finish = async (save) => {
    if (done) return;
    done = true;
    const title = input.value.trim();
    input.remove();
    link.hidden = false;
    if (!save || !title || title === c.title) return;
    try {
      const r = await api('PATCH', `/api/v1/conversations/${c.id}`, { title });
      c.title = r.title;
      if (state.current && state.current.id === c.id) { state.current.title = r.title; showTitle(); }
      renderList();
    } catch (e) { handleError(e); }
  };
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter') { ev.preventDefault(); finish(true); }
    if (ev.key === 'Escape') { ev.preventDefault(); finish(false); }
  });
  input.addEventListener('blur', () => finish(true));
}

function confirmDialog(text, okLabel) {
  return new Promise((resolve) => {
    const d = $('confirm-dialog');
    $('confirm-text').textContent = text;
    $('confirm-ok').textContent = okLabel;
    d.returnValue = '';
    d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
    d.showModal();
  });
}

async function deleteConversation(c) {
  if (!(await confirmDialog(`Delete “${c.title || 'New chat'}”? This cannot be undone.`, 'Delete'))) return;
  try {
    await api('DELETE', `/api/v1/conversations/${c.id}`);
    state.convs = state.convs.filter((x) => x.id !== c.id);
    localStorage.removeItem(`parley.sib.${c.id}`);
    if (state.current && state.current.id === c.id) newChat();
    renderList();
    toast('Chat deleted');
  } catch (e) { handleError(e); }
}

// --- the chat view ---------------------------------------------------------------------------

function showTitle() {
  const t = state.current ? state.current.title || 'New chat' : 'New chat';
  $('chat-title').textContent = t;
  document.title = state.current && state.current.title ? `${state.current.title} · parley` : 'parley';
  $('share').disabled = !state.current || !(state.current.messages || []).length;
}

// Leaves the answer being streamed to finish on its own (the server keeps writing it; opening its
// conversation again resumes it): the page stops following it and may start another.
function detachStream() {
  const s = state.streaming;
  if (!s) return;
  s.detached = true;
  setStreaming(null);
}

function newChat() {
  detachStream();
  state.current = null;
  if (location.search) history.pushState(null, '', '/');
  hideBanner();
  renderMessages();
  showTitle();
  showModel();
  renderList();
  $('composer-input').focus();
}

// Opens conversation `id`; a message sent meanwhile waits for it (state.opening) so that it
// cannot land in a new conversation instead.
function openConversation(id, push) {
  const p = loadConversation(id, push);
  state.opening = p;
  p.finally(() => { if (state.opening === p) state.opening = null; });
  return p;
}

async function loadConversation(id, push) {
  if (state.streaming && state.streaming.convId === id) return; // already following it
  detachStream();
  try {
    const c = await api('GET', `/api/v1/conversations/${id}`);
    setConversation(c);
    if (push) history.pushState(null, '', `/?c=${id}`);
    hideBanner();
    resumePending();
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) { showBanner('That chat does not exist (any more).'); newChat(); return; }
    handleError(e);
  }
}

function setConversation(c) {
  state.current = c;
  rememberSiblings(c);
  renderMessages();
  showTitle();
  showModel();
  renderList();
}

function renderMessages() {
  const box = $('messages');
  const msgs = state.current ? state.current.messages || [] : [];
  box.replaceChildren();
  if (!msgs.length) { box.append(welcome()); return; }
  const lastAnswer = [...msgs].reverse().find((m) => m.role === 'assistant');
  for (const m of msgs) box.append(messageEl(m, m === lastAnswer));
  scrollToEnd(true);
}

function fileChip(name) {
  const li = el('li', 'file-chip');
  li.append(icon('clip'), el('span', '', name));
  return li;
}

function welcome() {
  const w = el('div', 'welcome');
  w.id = 'welcome';
  w.append(el('h2', '', 'How can I help?'), el('p', 'muted', 'Ask anything. Enter sends, Shift+Enter adds a line.'));
  return w;
}

function scrollToEnd(force) {
  const box = $('messages');
  const near = box.scrollHeight - box.scrollTop - box.clientHeight < 160;
  if (force || near) box.scrollTop = box.scrollHeight;
}

function statusNote(m) {
  if (m.status === 'stopped') return 'Stopped.';
  if (m.status === 'failed') return `The answer failed${m.error ? `: ${m.error}` : '.'}`;
  return '';
}

function messageEl(m, isLastAnswer) {
  const art = el('article', `msg ${m.role}`);
  art.dataset.id = m.id;
  art.dataset.status = m.status || '';
  art.setAttribute('aria-label', m.role === 'user' ? 'Your message' : 'Answer');
  const body = el('div', m.role === 'user' ? 'msg-body plain' : 'msg-body markdown');
  if (m.role === 'user') body.textContent = m.content;
  else renderMarkdown(body, m.content, () => toast('Code copied'));
  art.append(body);
  if ((m.upload_ids || []).length) {
    const names = uploadNames();
    const ul = el('ul', 'msg-files');
    ul.setAttribute('aria-label', 'Attached files');
    for (const id of m.upload_ids) ul.append(fileChip(names[id] || 'attached file'));
    art.append(ul);
  }
  const note = statusNote(m);
  if (note) art.append(el('p', `msg-note ${m.status}`, note));
  if (m.status !== 'pending') art.append(toolsEl(m, isLastAnswer));
  return art;
}

function toolsEl(m, isLastAnswer) {
  const bar = el('div', 'msg-tools');
  const conv = state.current;
  if (m.sibling_count > 1) {
    const pager = el('span', 'pager');
    pager.setAttribute('role', 'group');
    pager.setAttribute('aria-label', m.role === 'user' ? 'Branches' : 'Versions');
    const prevId = m.sibling_index > 1 ? siblingId(conv.id, m, m.sibling_index - 1) : null;
    const nextId = m.sibling_index < m.sibling_count ? siblingId(conv.id, m, m.sibling_index + 1) : null;
    const prev = button('‹', 'icon', () => switchTo(prevId), `Previous ${m.role === 'user' ? 'branch' : 'version'}`);
    const next = button('›', 'icon', () => switchTo(nextId), `Next ${m.role === 'user' ? 'branch' : 'version'}`);
    prev.disabled = !prevId || !!state.streaming;
    next.disabled = !nextId || !!state.streaming;
    const pos = el('span', 'pager-pos', `${m.sibling_index}/${m.sibling_count}`);
    pos.setAttribute('aria-live', 'polite');
    pager.append(prev, pos, next);
    bar.append(pager);
  }
  bar.append(button('Copy', 'tool', () => copyText(m.content).then(() => toast('Copied')), 'Copy message'));
  if (m.role === 'user') {
    bar.append(button('Edit', 'tool', () => startEdit(m), 'Edit message'));
  } else {
    if (isLastAnswer) bar.append(button('Regenerate', 'tool', () => regenerate(m), 'Regenerate answer'));
    const up = button(':thumb-up', 'tool thumb', () => giveFeedback(m, 1), 'Good answer');
    const down = button(':thumb-down', 'tool thumb', () => giveFeedback(m, -1), 'Bad answer');
    up.setAttribute('aria-pressed', String(m.feedback === 1));
    down.setAttribute('aria-pressed', String(m.feedback === -1));
    bar.append(up, down);
  }
  return bar;
}

async function switchTo(id) {
  if (!id || !state.current || state.streaming) return;
  try {
    const c = await api('POST', `/api/v1/conversations/${state.current.id}/messages/${id}/switch`);
    setConversation(c);
  } catch (e) { handleError(e); }
}

async function giveFeedback(m, v) {
  const value = m.feedback === v ? 0 : v;
  try {
    await api('POST', `/api/v1/conversations/${state.current.id}/messages/${m.id}/feedback`, { value });
    m.feedback = value;
    const art = document.querySelector(`article[data-id="${m.id}"]`);
    if (art) {
      const [up, down] = art.querySelectorAll('.thumb');
      up.setAttribute('aria-pressed', String(value === 1));
      down.setAttribute('aria-pressed', String(value === -1));
    }
    toast(value ? 'Thanks for the feedback' : 'Feedback removed');
  } catch (e) { handleError(e); }
}

function startEdit(m) {
  if (state.streaming) return;
  const art = document.querySelector(`article[data-id="${m.id}"]`);
  if (!art) return;
  const form = el('form', 'edit-form');
  const ta = el('textarea', 'edit-input');
  ta.value = m.content;
  ta.setAttribute('aria-label', 'Edit your message');
  const cancel = button('Cancel', 'secondary', () => { form.remove(); art.querySelector('.msg-body').hidden = false; });
  const save = el('button', 'primary', 'Send');
  save.type = 'submit';
  form.append(ta, el('div', 'edit-actions'));
  form.lastChild.append(cancel, save);
  art.querySelector('.msg-body').hidden = true;
  art.insertBefore(form, art.querySelector('.msg-body').nextSibling);
  ta.focus();
  ta.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); form.requestSubmit(); }
    if (ev.key === 'Escape') cancel.click();
  });
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = ta.value.trim();
    if (!text) return;
    // The new branch starts at the edited message's parent (null: the first message).
    const msgs = state.current.messages;
    state.current.messages = msgs.slice(0, msgs.indexOf(m));
    renderMessages();
    sendMessage(text, m.parent_id || null, []);
  });
}

// --- sending and streaming -------------------------------------------------------------------

function setStreaming(s) {
  state.streaming = s;
  $('send').hidden = !!s;
  $('stop').hidden = !s;
  $('stop').disabled = false;
  for (const b of document.querySelectorAll('.pager button, .msg-tools .tool')) {
    if (s) b.disabled = true;
  }
}

async function ensureConversation() {
  if (state.current) return state.current;
  const body = {};
  if (state.newModel) body.model = state.newModel;
  const c = await api('POST', '/api/v1/conversations', body);
  c.messages = [];
  state.current = c;
  history.pushState(null, '', `/?c=${c.id}`);
  if (!state.query) { state.convs = [c, ...state.convs]; }
  renderList();
  showTitle();
  return c;
}

// Sends a message: after the active leaf (parent undefined) or as a new branch under `parent`.
async function sendMessage(text, parent, uploads) {
  if (state.opening) await state.opening;
  if (state.streaming) return;
  hideBanner();
  let conv;
  try { conv = await ensureConversation(); } catch (e) { handleError(e); return; }
  const body = { content: text };
  if (parent !== undefined) body.parent_id = parent;
  if (uploads.length) body.upload_ids = uploads.map((u) => u.id);
  const mt = maxTokens();
  if (mt) body.max_tokens = mt;
  const user = { id: '', role: 'user', content: text, status: 'complete', upload_ids: body.upload_ids || [],
                 sibling_index: 1, sibling_count: 1, parent_id: parent || null };
  if ($('welcome')) $('welcome').remove();
  const userEl = messageEl(user, false);
  userEl.querySelector('.msg-tools')?.remove();
  $('messages').append(userEl);
  const r = await runAnswer(conv.id, postStream(`/api/v1/conversations/${conv.id}/messages`, body), { userEl });
  // A refused message goes back into the box, so that nothing typed is lost.
  if (r.refused && parent === undefined && !$('composer-input').value) {
    $('composer-input').value = text;
    state.attachments = uploads.concat(state.attachments);
    renderAttachments();
  }
}

async function regenerate(m) {
  if (state.streaming || !state.current) return;
  hideBanner();
  const conv = state.current;
  const old = document.querySelector(`article[data-id="${m.id}"]`);
  if (old) old.remove();
  const body = {};
  const mt = maxTokens();
  if (mt) body.max_tokens = mt;
  await runAnswer(conv.id, postStream(`/api/v1/conversations/${conv.id}/messages/${m.id}/regenerate`, body), {});
}

// Streams an answer into a new message element; `starter` opens the stream (null: resume the
// pending answer opts.messageId from opts.lastEventId with opts.text already shown).
async function runAnswer(convId, starter, opts) {
  const art = el('article', 'msg assistant');
  art.dataset.status = 'pending';
  art.setAttribute('aria-label', 'Answer');
  art.setAttribute('aria-busy', 'true');
  const body = el('div', 'msg-body markdown');
  const typing = el('div', 'typing');
  typing.setAttribute('aria-label', 'parley is writing');
  typing.append(el('span'), el('span'), el('span'));
  art.append(body, typing);
  if ($('welcome')) $('welcome').remove();
  $('messages').append(art);
  scrollToEnd(true);
  const s = { convId, messageId: opts.messageId || null, stopRequested: false, detached: false };
  setStreaming(s);
  let text = opts.text || '';
  let frame = 0;
  const paint = () => {
    frame = 0;
    if (s.detached) return;
    renderMarkdown(body, text);
    scrollToEnd(false);
  };
  if (text) paint();
  let ended = null;
  let refused = false; // turned down before it started (429, 403, 400…)
  try {
    await streamAnswer(convId, starter, {
      start(d) {
        s.messageId = d.assistant_message_id;
        art.dataset.id = d.assistant_message_id;
        if (opts.userEl && d.user_message_id) opts.userEl.dataset.id = d.user_message_id;
        if (s.stopRequested) stopAnswer();
      },
      delta(t, id) {
        text += t;
        if (s.messageId) saveProgress(s.messageId, text, id);
        if (!frame) frame = requestAnimationFrame(paint);
      },
      error(d) { ended = { status: 'failed', error: d.message }; },
      done(d) { ended = d || { status: 'complete' }; },
      reconnecting() { if (!s.detached) showBanner('Connection lost: reconnecting…', 'info'); },
    }, { messageId: opts.messageId, lastEventId: opts.lastEventId });
    if (!s.detached) hideBanner();
  } catch (e) {
    if (!s.detached) handleError(e);
    ended = ended || { status: 'failed' };
    refused = e instanceof ApiError && !s.messageId;
  } finally {
    if (frame) cancelAnimationFrame(frame);
    typing.remove();
    art.removeAttribute('aria-busy');
    if (s.messageId && !s.detached) clearProgress(s.messageId);
    if (state.streaming === s) setStreaming(null);
  }
  if (s.detached) return { refused: false };
  paint();
  art.dataset.status = (ended && ended.status) || 'complete';
  // The stored conversation is the truth: versions, ids, statuses and the generated title.
  // The completion is saved a moment after the stream's `done` (parley-chat writes it when the
  // worker's record arrives), so a fresh read may still say pending: read again briefly, and
  // otherwise show what was streamed.
  for (let i = 0; i < 12 && state.current && state.current.id === convId; i++) {
    let c;
    try { c = await api('GET', `/api/v1/conversations/${convId}`); } catch (e) { handleError(e); break; }
    if (!state.current || state.current.id !== convId || state.streaming) break;
    const mine = (c.messages || []).find((m) => m.id === s.messageId);
    if (mine && mine.status === 'pending' && i < 11) {
      await new Promise((res) => setTimeout(res, 250));
      continue;
    }
    if (mine && mine.status === 'pending') {
      mine.status = (ended && ended.status) || 'complete';
      mine.content = text;
    }
    setConversation(c);
    break;
  }
  refreshQuota();
  refreshTitleSoon(convId);
  return { refused };
}

// The first answer of an untitled conversation gets a title from the model shortly after.
function refreshTitleSoon(convId) {
  let tries = 0;
  const tick = async () => {
    if (!state.current || state.current.id !== convId || state.current.title || tries++ > 5) return;
    try {
      const c = await api('GET', `/api/v1/conversations/${convId}`);
      if (c.title && state.current && state.current.id === convId) {
        state.current.title = c.title;
        const item = state.convs.find((x) => x.id === convId);
        if (item) item.title = c.title;
        showTitle();
        renderList();
        return;
      }
    } catch { return; }
    setTimeout(tick, 1500);
  };
  setTimeout(tick, 500);
}

async function stopAnswer() {
  const s = state.streaming;
  if (!s) return;
  s.stopRequested = true;
  if (!s.messageId) return; // sent as soon as the answer has an id
  $('stop').disabled = true;
  try {
    await api('POST', `/api/v1/conversations/${s.convId}/messages/${s.messageId}/stop`);
  } catch (e) {
    $('stop').disabled = false;
    handleError(e);
  }
}

// After opening a conversation (or reloading the page) during an answer: follow it again.
function resumePending() {
  const msgs = state.current.messages || [];
  const last = msgs[msgs.length - 1];
  if (!last || last.role !== 'assistant' || last.status !== 'pending' || state.streaming) return;
  const art = document.querySelector(`article[data-id="${last.id}"]`);
  if (art) art.remove();
  const p = loadProgress(last.id);
  runAnswer(state.current.id, null, { messageId: last.id, lastEventId: p ? p.lastId : null, text: p ? p.text : '' });
}

// --- attachments -----------------------------------------------------------------------------

function renderAttachments() {
  const ul = $('attachments');
  ul.replaceChildren(...state.attachments.map((a) => {
    const li = el('li', `file-chip${a.error ? ' bad' : ''}`);
    const label = a.error ? `${a.name}: ${a.error}` : a.uploading ? `${a.name} (uploading…)` : a.name;
    const span = el('span', '', label);
    if (a.error) span.setAttribute('role', 'alert');
    else li.append(icon('clip'));
    li.append(span, button(':close', 'icon', () => {
      state.attachments = state.attachments.filter((x) => x !== a);
      renderAttachments();
    }, `Remove ${a.name}`));
    return li;
  }));
}

function guessType(file) {
  if (file.type) return file.type;
  return TEXT_EXT.test(file.name) ? 'text/plain' : 'application/octet-stream';
}

async function attachFiles(files) {
  for (const f of files) {
    const a = { name: f.name, size: f.size, uploading: true };
    state.attachments.push(a);
    renderAttachments();
    if (f.size > UPLOAD_MAX) {
      a.uploading = false;
      a.error = `too big (${Math.ceil(f.size / 1024)} KiB): files can be at most 512 KiB`;
      renderAttachments();
      continue;
    }
    try {
      // Header values must be Latin-1: other characters of the name become '_'.
      const safe = f.name.replace(/[^\x20-\x7e]/g, '_');
      const u = await api('POST', '/api/v1/uploads', f, { 'Content-Type': guessType(f), 'X-Filename': safe });
      a.id = u.id;
      rememberUpload(u);
    } catch (e) {
      a.error = e instanceof ApiError && e.status === 413 ? 'too big: files can be at most 512 KiB'
        : e instanceof ApiError && e.status === 415 ? `not a supported type. ${e.message}` : describe(e);
    }
    a.uploading = false;
    renderAttachments();
  }
}

// --- sharing ---------------------------------------------------------------------------------

async function listShares() {
  const ul = $('share-list');
  try {
    const r = await api('GET', '/api/v1/shares');
    ul.replaceChildren(...r.data.map((s) => {
      const li = el('li', 'share-item');
      const when = new Date(s.created_at * 1000).toLocaleString();
      li.append(el('span', 'share-title', `${s.title || 'Untitled'} · ${when}`),
        button('Revoke', 'danger small', async () => {
          try {
            await api('DELETE', `/api/v1/shares/${s.id}`);
            toast('Link revoked');
            listShares();
          } catch (e) { $('share-error').textContent = describe(e); }
        }, `Revoke the link to ${s.title || 'this chat'}`));
      return li;
    }));
    $('share-empty').hidden = r.data.length > 0;
  } catch (e) { $('share-error').textContent = describe(e); }
}

function openShareDialog(forConversation) {
  $('share-error').textContent = '';
  $('share-result').hidden = true;
  $('share-create-row').hidden = !forConversation;
  $('share-title').textContent = forConversation ? 'Share this chat' : 'Shared links';
  listShares();
  $('share-dialog').showModal();
}

async function createShare() {
  if (!state.current) return;
  $('share-error').textContent = '';
  try {
    const s = await api('POST', `/api/v1/conversations/${state.current.id}/shares`, {});
    $('share-url').value = new URL(s.url, location.origin).href;
    $('share-result').hidden = false;
    $('share-url').select();
    listShares();
  } catch (e) { $('share-error').textContent = describe(e); }
}

// --- settings --------------------------------------------------------------------------------

function openSettings() {
  const u = state.me.user;
  $('settings-account').textContent = `${u.email} · ${state.me.tier ? state.me.tier.name : u.tier} tier`;
  $('custom-instructions').value = u.custom_instructions || '';
  $('max-tokens').value = localStorage.getItem('parley.maxTokens') || '';
  $('settings-error').textContent = '';
  $('settings-dialog').showModal();
}

async function saveSettings(ev) {
  if (ev.submitter && ev.submitter.value !== 'save') return;
  ev.preventDefault();
  const mt = $('max-tokens').value.trim();
  if (mt && !(parseInt(mt, 10) > 0)) { $('settings-error').textContent = 'The longest answer is a positive number of tokens.'; return; }
  try {
    const r = await api('PATCH', '/api/v1/me', { custom_instructions: $('custom-instructions').value });
    state.me.user = r.user;
    if (mt) localStorage.setItem('parley.maxTokens', String(parseInt(mt, 10)));
    else localStorage.removeItem('parley.maxTokens');
    $('settings-dialog').close('save');
    toast('Settings saved');
  } catch (e) { $('settings-error').textContent = describe(e); }
}

// --- layout (phone: the list is a drawer) ------------------------------------------------------

function openSidebar() { $('sidebar').classList.add('open'); $('scrim').hidden = false; $('search').focus(); }
function closeSidebar() { $('sidebar').classList.remove('open'); $('scrim').hidden = true; }

// --- start -----------------------------------------------------------------------------------

function routeFromUrl() {
  const id = new URLSearchParams(location.search).get('c');
  if (id) openConversation(id, false);
  else newChat();
}

async function boot() {
  try {
    state.me = await api('GET', '/api/v1/me');
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) { showAuth(); return; }
    $('auth').hidden = false;
    $('auth-error').textContent = describe(e);
    return;
  }
  $('auth').hidden = true;
  $('who').textContent = `${state.me.user.email} · ${state.me.tier ? state.me.tier.name : state.me.user.tier}`;
  showQuota(state.me.quota);
  const list = loadConversations(true);
  await loadModels();
  // The app shows once the conversation in the address is being opened: a message typed from
  // then on waits for it (sendMessage) instead of starting a new conversation.
  routeFromUrl();
  $('app').hidden = false;
  await list;
  maybeLoadMore();
}

function wire() {
  $('tab-login').addEventListener('click', () => setAuthMode('login'));
  $('tab-signup').addEventListener('click', () => setAuthMode('signup'));
  $('auth-form').addEventListener('submit', submitAuth);
  $('new-chat').addEventListener('click', () => { newChat(); closeSidebar(); });
  $('search').addEventListener('input', onSearch);
  $('conv-list-wrap').addEventListener('scroll', maybeLoadMore, { passive: true });
  $('logout').addEventListener('click', logout);
  $('open-settings').addEventListener('click', openSettings);
  $('settings-form').addEventListener('submit', saveSettings);
  $('open-shares').addEventListener('click', () => openShareDialog(false));
  $('share').addEventListener('click', () => openShareDialog(true));
  $('share-create').addEventListener('click', createShare);
  $('share-copy').addEventListener('click', () => copyText($('share-url').value).then(() => toast('Link copied')));
  $('share-close').addEventListener('click', () => $('share-dialog').close());
  $('model').addEventListener('change', changeModel);
  $('banner-close').addEventListener('click', hideBanner);
  $('skip').addEventListener('click', (ev) => { ev.preventDefault(); $('composer-input').focus(); });
  $('open-sidebar').addEventListener('click', openSidebar);
  $('close-sidebar').addEventListener('click', closeSidebar);
  $('scrim').addEventListener('click', closeSidebar);
  $('stop').addEventListener('click', stopAnswer);
  $('file-input').addEventListener('change', (ev) => { attachFiles([...ev.target.files]); ev.target.value = ''; });
  $('attach-label').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); $('file-input').click(); }
  });
  const input = $('composer-input');
  const grow = () => { input.style.height = 'auto'; input.style.height = `${Math.min(input.scrollHeight, 240)}px`; };
  input.addEventListener('input', grow);
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); $('composer').requestSubmit(); }
  });
  $('composer').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = input.value.trim();
    if (!text || state.streaming) return;
    if (state.attachments.some((a) => a.uploading)) { showBanner('Wait for the files to finish uploading.', 'info'); return; }
    if (state.attachments.some((a) => a.error)) { showBanner('Remove the files that could not be attached first.', 'info'); return; }
    const uploads = state.attachments.filter((a) => a.id);
    state.attachments = [];
    renderAttachments();
    input.value = '';
    grow();
    sendMessage(text, undefined, uploads);
  });
  window.addEventListener('popstate', () => { if (state.me) routeFromUrl(); });
  document.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') closeSidebar(); });
  onQuota(showQuota);
}

fillIcons();
wire();
setAuthMode('login');
boot();
