// The canonical form (docs/PROTOCOL.md §3): the exact text FLUX signs and hashes, which is
// Python's json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
// over FLUX's data model. Mirrors flux.protocol.canonical.
//
// The data model is decided here, in one place, as in Python: objects with string keys
// (sorted by Unicode code point, not by JavaScript's UTF-16 code units, which order
// characters above U+FFFF differently), arrays, strings holding valid Unicode (no lone
// surrogate), integers within ±(2^53−1), true, false, null. Anything else (a fraction, NaN,
// undefined, a Date, a BigInt…) is refused with malformed_json rather than written in some
// form another implementation would not produce.

import { fail } from "./errors.js";
import { utf8 } from "./bytes.js";

const MAX_DEPTH = 64; // §3.1: deeper input is refused everywhere

const SHORT = { '"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t" };
// eslint-disable-next-line no-control-regex
const NEEDS_ESCAPE = /["\\\u0000-\u001f\u007f-\uffff]/g;

function escapeChar(ch) {
  return SHORT[ch] ?? "\\u" + ch.charCodeAt(0).toString(16).padStart(4, "0");
}

function quote(text) {
  if (!text.isWellFormed()) throw fail("malformed_json", "a string holds a lone surrogate (not valid Unicode)");
  // Code unit by code unit: a character above U+FFFF is already a surrogate pair, and each
  // half becomes its own \uXXXX escape, as Python writes it.
  return '"' + text.replace(NEEDS_ESCAPE, escapeChar) + '"';
}

/** Compare two strings by Unicode code point (Python's str order). */
export function byCodePoint(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) {
      // A surrogate (U+D800-DFFF) stands for a code point above U+FFFF: above everything.
      const xs = x >= 0xd800 && x <= 0xdfff;
      const ys = y >= 0xd800 && y <= 0xdfff;
      if (xs !== ys) return xs ? 1 : -1;
      return x < y ? -1 : 1;
    }
  }
  return a.length - b.length;
}

function write(value, depth, out) {
  if (value === null) return out.push("null");
  switch (typeof value) {
    case "boolean":
      return out.push(value ? "true" : "false");
    case "string":
      return out.push(quote(value));
    case "number":
      if (!Number.isSafeInteger(value)) {
        throw fail("malformed_json", `the number ${value} is not an integer within ±(2^53−1)`);
      }
      return out.push(String(value));
    case "object":
      break;
    default:
      throw fail("malformed_json", `a ${typeof value} is not a FLUX JSON value`);
  }
  if (depth >= MAX_DEPTH) throw fail("malformed_json", `nested deeper than ${MAX_DEPTH} levels`);
  if (Array.isArray(value)) {
    out.push("[");
    value.forEach((item, i) => {
      if (i) out.push(",");
      write(item, depth + 1, out);
    });
    return out.push("]");
  }
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) {
    throw fail("malformed_json", "only plain objects are FLUX JSON objects");
  }
  out.push("{");
  Object.keys(value)
    .sort(byCodePoint)
    .forEach((key, i) => {
      if (i) out.push(",");
      out.push(quote(key), ":");
      write(value[key], depth + 1, out);
    });
  return out.push("}");
}

/**
 * The canonical text of `value` (PROTOCOL §3.2). Sync. Pure ASCII.
 * @throws {FluxError} malformed_json for anything outside the data model (§3.1)
 */
export function canonical(value) {
  const out = [];
  write(value, 0, out);
  return out.join("");
}

/** The canonical bytes of `value` (its ASCII). */
export const canonicalBytes = (value) => utf8(canonical(value));

/** A shallow copy of `obj` without the `excluded` keys (a Set); the input is not touched. */
export function without(obj, excluded) {
  // No prototype: a "__proto__" key (JSON.parse makes it an own property) stays a key.
  const out = Object.create(null);
  for (const key of Object.keys(obj)) if (!excluded.has(key)) out[key] = obj[key];
  return out;
}
