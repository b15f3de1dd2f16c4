// Building the page from data without ever parsing data as HTML.
//
// Every string that came from outside (message text, subjects, names, tags, server
// answers) reaches the page through `h(...)` children or `text(...)`, which make text
// nodes; nothing here assigns innerHTML, and the page's CSP (require-trusted-types-for
// 'script') makes any such assignment throw. Sender names and subjects also go through
// `visible(...)`: characters that reorder or hide text (bidi overrides and isolates,
// zero-width and other control characters) are replaced by a visible mark such as
// [U+202E], so "moc.knab@" cannot pass for "bank.com", and are shown inside <bdi> so a
// right-to-left name cannot reorder what is around it.

/** Characters that can disguise text: C0/C1 controls, bidi embeddings, overrides,
 * isolates and marks, zero-width characters, the BOM, and the line/paragraph separators;
 * and characters drawn as nothing or as a blank, which hide text or fake a space: the soft
 * hyphen, the combining grapheme joiner, the Hangul and Khmer fillers, the Mongolian vowel
 * separator, the interlinear annotation marks and the tag characters (U+E0000-E007F,
 * invisible: text "smuggled" in them reads as nothing on screen). */
const DISGUISING = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2069\u3164\ufeff\uffa0\ufff9-\ufffb\u{e0000}-\u{e007f}]/gu;
/** The same for multi-line text: newlines and tabs are kept. */
const DISGUISING_IN_TEXT = DISGUISING;

function mark(ch) {
  return `[U+${ch.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}]`;
}

/** `s` with every disguising character replaced by a visible [U+XXXX] mark. */
export function visible(s) {
  return String(s ?? "").replace(DISGUISING, mark);
}

/** Multi-line text (message content): the same, keeping newlines and tabs. */
export function visibleText(s) {
  // CRLF is a line end (mail written elsewhere often has it), not a CR to mark on every line
  const lines = String(s ?? "").replace(/\r\n/g, "\n");
  return lines.replace(DISGUISING_IN_TEXT, (ch) => (ch === "\n" || ch === "\t" ? ch : mark(ch)));
}

/** True when `s` had characters that `visible` marks. */
export function hasDisguise(s) {
  return new RegExp(DISGUISING.source, "u").test(String(s ?? ""));
}

/** True when a name mixes letters of Latin with Cyrillic or Greek (a look-alike). */
export function mixedScripts(s) {
  const str = String(s ?? "");
  const latin = /\p{Script=Latin}/u.test(str);
  return latin && (/\p{Script=Cyrillic}/u.test(str) || /\p{Script=Greek}/u.test(str));
}

/**
 * h("button", {class: "x", onclick: fn, "aria-label": "y"}, "text", child, ...):
 * an element; string children become text nodes; attribute values are set as attributes
 * (never as HTML); `on*` functions become listeners; null/false children are skipped.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** A <bdi> holding `s` made visible: for names, subjects, tags. */
export function safe(s, cls) {
  return h("bdi", cls ? { class: cls } : null, visible(s));
}

/** Replace the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Replace the children of `el` with `children`, except `keep` (one of them, already in
 * `el`): it stays where it is, never taken out and put back. Taking out a focused element
 * blurs it; kept in place, what is typed in it, its selection and its focus survive. */
export function fillKeeping(el, keep, ...children) {
  const flat = children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false);
  const at = flat.indexOf(keep);
  if (!keep || keep.parentNode !== el || at < 0) return fill(el, ...children);
  for (const child of [...el.childNodes]) if (child !== keep) child.remove();
  const nodes = flat.map((c) => (c instanceof Node ? c : document.createTextNode(String(c))));
  keep.before(...nodes.slice(0, at));
  keep.after(...nodes.slice(at + 1));
  return el;
}

export const $ = (id) => document.getElementById(id);
