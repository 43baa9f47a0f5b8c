// markdown.js — renders message text: Markdown (marked) sanitised by DOMPurify, code blocks
// highlighted (highlight.js) with a copy button. The libraries are Debian's packaged files,
// loaded as classic scripts before the modules run; without DOMPurify nothing is ever parsed as
// HTML (the text is shown as it is).

export function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    return navigator.clipboard.writeText(text).catch(() => fallbackCopy(text));
  }
  return Promise.resolve(fallbackCopy(text));
}

function fallbackCopy(text) {
  const ta = document.createElement('textarea');
  ta.value = text;
  ta.setAttribute('readonly', '');
  ta.className = 'offscreen';
  document.body.appendChild(ta);
  ta.select();
  try { document.execCommand('copy'); } finally { ta.remove(); }
}

function enhanceCode(root, onCopied) {
  for (const pre of root.querySelectorAll('pre')) {
    const code = pre.querySelector('code');
    if (!code || pre.parentElement.classList.contains('code-block')) continue;
    if (window.hljs) {
      try {
        const fn = window.hljs.highlightElement || window.hljs.highlightBlock;
        fn.call(window.hljs, code);
      } catch { /* leave it plain */ }
    }
    const wrap = document.createElement('div');
    wrap.className = 'code-block';
    const bar = document.createElement('div');
    bar.className = 'code-bar';
    const lang = (code.className.match(/language-([\w+#-]+)/) || [])[1] || 'code';
    const label = document.createElement('span');
    label.textContent = lang;
    const btn = document.createElement('button');
    btn.type = 'button';
    btn.className = 'code-copy';
    btn.textContent = 'Copy code';
    btn.setAttribute('aria-label', `Copy ${lang} code`);
    btn.addEventListener('click', () => {
      copyText(code.textContent).then(() => {
        btn.textContent = 'Copied';
        setTimeout(() => { btn.textContent = 'Copy code'; }, 1500);
        onCopied && onCopied();
      });
    });
    bar.append(label, btn);
    pre.replaceWith(wrap);
    wrap.append(bar, pre);
  }
  for (const t of root.querySelectorAll('table')) {
    if (t.parentElement.classList.contains('table-wrap')) continue;
    const w = document.createElement('div');
    w.className = 'table-wrap';
    t.replaceWith(w);
    w.append(t);
  }
  for (const a of root.querySelectorAll('a[href]')) {
    a.target = '_blank';
    a.rel = 'noopener noreferrer nofollow';
  }
}

// Debian 12's DOMPurify (node-dompurify 2.4.1+deb12u1) reads an undeclared global `shadowNode`
// in sanitize() (a slip of the backported nesting-depth fix), so every call with markup throws a
// ReferenceError. Declaring it with depth 0 makes that one root check a no-op; the per-node depth
// checks of the fix still run. Harmless with a fixed DOMPurify, which never reads it.
if (!('shadowNode' in window)) window.shadowNode = { __depth: 0 };

// Replaces the content of `el` with `text` rendered as Markdown (safe for text that is still
// arriving: an unclosed code fence renders as a code block so far).
export function renderMarkdown(el, text, onCopied) {
  if (!window.marked || !window.DOMPurify) {
    el.textContent = text;
    return;
  }
  const parse = window.marked.parse || window.marked;
  const html = parse(text, { gfm: true, breaks: false, mangle: false, headerIds: false });
  el.innerHTML = window.DOMPurify.sanitize(html, { USE_PROFILES: { html: true } });
  enhanceCode(el, onCopied);
}
