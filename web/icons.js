// icons.js — the few icons the app draws, as inline SVG (no icon font: headless and minimal
// systems often have no emoji font). Each is 16×16, stroked in the current colour.

const PATHS = {
  'thumb-up': 'M5 7v7H2V7h3zm0 0 3-5c1 0 2 .8 2 2v2h3.2a1.3 1.3 0 0 1 1.3 1.5l-.9 5A1.3 1.3 0 0 1 12.3 14H5',
  'thumb-down': 'M5 9V2H2v7h3zm0 0 3 5c1 0 2-.8 2-2v-2h3.2a1.3 1.3 0 0 0 1.3-1.5l-.9-5A1.3 1.3 0 0 0 12.3 2H5',
  trash: 'M2.5 4h11M6 4V2.5h4V4m-6 0 .7 9.5h6.6L12 4M6.5 6.5v5m3-5v5',
  pencil: 'M11 2.5 13.5 5 6 12.5 3 13l.5-3L11 2.5z',
  clip: 'M13 7.5 8 12.5a3.2 3.2 0 0 1-4.5-4.5l5.5-5.5a2.1 2.1 0 0 1 3 3L6.5 11a1 1 0 0 1-1.5-1.5L10 4.5',
  close: 'M3.5 3.5l9 9m0-9-9 9',
  menu: 'M2 4h12M2 8h12M2 12h12',
};

export function icon(name) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 16 16');
  svg.setAttribute('width', '16');
  svg.setAttribute('height', '16');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('class', 'ico');
  const p = document.createElementNS(ns, 'path');
  p.setAttribute('d', PATHS[name] || '');
  svg.append(p);
  return svg;
}

// Puts icons into the static markup: <span data-icon="clip"></span>.
export function fillIcons(root = document) {
  for (const span of root.querySelectorAll('[data-icon]')) {
    if (!span.firstChild) span.append(icon(span.dataset.icon));
  }
}
