// Markdown of replies, rendered safely: marked (CommonMark + GFM) parses,
// raw HTML in the source is shown as text, DOMPurify sanitises the result,
// links open in a new tab without opener or referrer, images become links
// (the page's CSP loads no remote images), code blocks get a copy button.

import { Marked } from '../vendor/marked.esm.js';
import DOMPurify from '../vendor/purify.es.js';

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

const marked = new Marked({ gfm: true, breaks: true });
marked.use({
  renderer: {
    html(token) {
      return escapeHtml(token.raw != null ? token.raw : token.text);
    },
    image(token) {
      const label = token.text || token.href;
      return `<a href="${escapeHtml(token.href)}">${escapeHtml(label)}</a>`;
    },
  },
});

const PURIFY = {
  FORBID_TAGS: ['style', 'img', 'form', 'input', 'button', 'textarea', 'select', 'iframe', 'object', 'embed', 'svg', 'math'],
  FORBID_ATTR: ['style', 'class', 'id'],
  ALLOW_DATA_ATTR: false,
  RETURN_DOM_FRAGMENT: true,
};

DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A') {
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer');
  }
});

// Replaces `target`'s children with `text` rendered as markdown.
export function renderMarkdown(target, text) {
  let fragment;
  try {
    fragment = DOMPurify.sanitize(marked.parse(String(text || '')), PURIFY);
  } catch (_) {
    target.textContent = String(text || '');
    return;
  }
  for (const pre of fragment.querySelectorAll('pre')) {
    const wrap = document.createElement('div');
    wrap.className = 'code-block';
    const copy = document.createElement('button');
    copy.type = 'button';
    copy.className = 'btn copy-btn';
    copy.dataset.copy = '1';
    copy.textContent = 'Copy';
    copy.setAttribute('aria-label', 'Copy code');
    pre.replaceWith(wrap);
    wrap.append(copy, pre);
  }
  target.replaceChildren(fragment);
}

// Click handler for copy buttons inside rendered markdown.
export async function onCopyClick(ev) {
  const btn = ev.target.closest('button[data-copy]');
  if (!btn) return false;
  const code = btn.parentElement.querySelector('pre');
  const text = code ? code.textContent : '';
  try {
    await navigator.clipboard.writeText(text);
    btn.textContent = 'Copied';
  } catch (_) {
    btn.textContent = 'Copy failed';
  }
  setTimeout(() => {
    btn.textContent = 'Copy';
  }, 1500);
  return true;
}
