// share.js — the public page of a shared conversation (/s/{token}): fetches the snapshot as
// JSON from the same address and renders it read-only. Needs no account.

import { renderMarkdown } from './markdown.js';

const $ = (id) => document.getElementById(id);

function fail(text) {
  $('shared-title').textContent = 'Not available';
  $('shared-error').textContent = text;
  $('shared-error').hidden = false;
}

async function load() {
  const token = location.pathname.split('/').filter(Boolean).pop() || '';
  let resp;
  try {
    resp = await fetch(`/s/${encodeURIComponent(token)}`, { headers: { Accept: 'application/json' }, credentials: 'omit', referrerPolicy: 'no-referrer' });
  } catch {
    fail('The page could not be loaded. Check your connection and reload.');
    return;
  }
  if (resp.status === 404) { fail('This shared chat does not exist or was unshared by its owner.'); return; }
  if (!resp.ok) { fail(`The page could not be loaded (HTTP ${resp.status}). Try again later.`); return; }
  const s = await resp.json();
  $('shared-title').textContent = s.title || 'Shared chat';
  document.title = `${s.title || 'Shared chat'} · parley`;
  $('shared-meta').textContent = `Shared ${new Date(s.created_at * 1000).toLocaleString()} · ${s.messages.length} messages`;
  const box = $('shared-messages');
  for (const m of s.messages) {
    const art = document.createElement('article');
    art.className = `msg ${m.role}`;
    art.setAttribute('aria-label', m.role === 'user' ? 'Message' : 'Answer');
    const body = document.createElement('div');
    body.className = m.role === 'user' ? 'msg-body plain' : 'msg-body markdown';
    if (m.role === 'user') body.textContent = m.content;
    else renderMarkdown(body, m.content);
    art.append(body);
    box.append(art);
  }
}

load();
