// Bytes on the wire (docs/PROTOCOL.md §1): base64url WITH '=' padding, decoded strictly
// (alphabet A-Z a-z 0-9 - _, padding required, canonical: unused bits zero), so one value
// has one spelling, exactly as flux.protocol.encoding.b64d; plus hex and UTF-8 helpers.

import { fail } from "./errors.js";

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const VALUE = new Int16Array(128).fill(-1);
for (let i = 0; i < 64; i++) VALUE[ALPHABET.charCodeAt(i)] = i;

/** base64url with '=' padding of `bytes` (Uint8Array). Sync. */
export function b64e(bytes) {
  let out = "";
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += ALPHABET[n >> 18] + ALPHABET[(n >> 12) & 63] + ALPHABET[(n >> 6) & 63] + ALPHABET[n & 63];
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = bytes[i] << 16;
    out += ALPHABET[n >> 18] + ALPHABET[(n >> 12) & 63] + "==";
  } else if (rest === 2) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8);
    out += ALPHABET[n >> 18] + ALPHABET[(n >> 12) & 63] + ALPHABET[(n >> 6) & 63] + "=";
  }
  return out;
}

/**
 * Strict decode of padded base64url. Sync.
 * @param {unknown} text
 * @param {string} [field]  named in the error
 * @param {number} [length]  the exact number of bytes required
 * @returns {Uint8Array}
 * @throws {FluxError} invalid_value naming `field`
 */
export function b64d(text, field = "value", length = undefined) {
  if (typeof text !== "string" || text.length % 4) {
    throw fail("invalid_value", `${field} is not padded base64url`, field);
  }
  const pad = text.endsWith("==") ? 2 : text.endsWith("=") ? 1 : 0;
  const body = text.length - pad;
  const out = new Uint8Array((text.length / 4) * 3 - pad);
  let bits = 0;
  let acc = 0;
  let o = 0;
  for (let i = 0; i < body; i++) {
    const c = text.charCodeAt(i);
    const v = c < 128 ? VALUE[c] : -1;
    if (v < 0) throw fail("invalid_value", `${field} is not padded base64url`, field);
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 255;
    }
    acc &= (1 << bits) - 1;
  }
  if (acc !== 0) throw fail("invalid_value", `${field} is not canonical base64url`, field);
  if (length !== undefined && out.length !== length) {
    throw fail("invalid_value", `${field} must encode ${length} bytes, not ${out.length}`, field);
  }
  return out;
}

/** Lower-case hex of `bytes`. */
export function hex(bytes) {
  let out = "";
  for (const b of bytes) out += b.toString(16).padStart(2, "0");
  return out;
}

export function fromHex(text) {
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

/** UTF-8 bytes of a (well-formed) string. */
export const utf8 = (text) => encoder.encode(text);
/** The string of UTF-8 `bytes`; throws TypeError on invalid UTF-8. */
export const fromUtf8 = (bytes) => strictDecoder.decode(bytes);

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}
