// Envelopes (docs/PROTOCOL.md §4): the signed payload, the two hashes, the shape rules and
// verification in §4.3's order, with the same error codes and fields as
// flux.protocol.envelope (whose tables this mirrors one for one).

import { FluxError, fail } from "./errors.js";
import { b64d, hex, utf8 } from "./bytes.js";
import { canonicalBytes, without } from "./canonical.js";
import { addressFromPub, ADDRESS_RE, verifySignature } from "./identity.js";
import { sha256 } from "./webcrypto.js";

export const VERSION = "1.0";
export const MAX_CONTENT_BYTES = 65536;
export const MAX_SUBJECT_BYTES = 4096;
export const MAX_RECIPIENTS = 100;
export const MAX_TAGS = 32;
export const MAX_TAG_CHARS = 64;
export const MAX_ROUTE_HOPS = 32;
export const MAX_CLOCK_SKEW_MS = 5 * 60 * 1000;
export const ENCRYPTED_PLACEHOLDER = "[encrypted]";

const RETRIEVAL = ["_status", "_inbox", "_tags", "_from_name", "_sent_at", "_delivery"];
/** Outside the sender's signature (§3.3). */
export const UNSIGNED_FIELDS = new Set(["sig", "pub", "route", "integrity_chain", ...RETRIEVAL]);
/** Outside a hop's `hash`: the above and `bcc`. */
export const UNHASHED_FIELDS = new Set([...UNSIGNED_FIELDS, "bcc"]);
/** Outside the body hash `bh`: only what servers add. */
export const UNSEALED_FIELDS = new Set(["route", "integrity_chain", ...RETRIEVAL]);

export const ID_RE = /^[0-9a-f]{32}$/;
export const SERVER_RE = /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[0-9]{1,5})?$/;
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\x00-\x1f\x7f]/;

const sha256Hex = async (bytes) => hex(await sha256(bytes));

/** The exact bytes the sender signs (§3.3). */
export const signingPayload = (msg) => canonicalBytes(without(msg, UNSIGNED_FIELDS));
/** The prototype's hop `hash` (hex). */
export const integrityHash = (msg) => sha256Hex(canonicalBytes(without(msg, UNHASHED_FIELDS)));
/** `bh`, the body hash (hex): everything the sender sent, `sig` and `pub` included. */
export const bodyHash = (msg) => sha256Hex(canonicalBytes(without(msg, UNSEALED_FIELDS)));

// -- the shape rules (§4.1, §4.3 steps 2-5) ---------------------------------------------------

const isInt = (v) => typeof v === "number" && Number.isInteger(v);

function requireStr(name, value) {
  if (typeof value !== "string") throw fail("wrong_type", `${name} must be a string`, name);
}

function requireInt(name, value) {
  if (!isInt(value)) throw fail("wrong_type", `${name} must be an integer`, name);
  if (!Number.isSafeInteger(value)) throw fail("invalid_value", `${name} is outside ±(2^53-1)`, name);
}

export function requireAddress(name, value) {
  if (typeof value === "string" && ADDRESS_RE.test(value)) return;
  requireStr(name, value);
  throw fail("invalid_value", `${name} is not an fx1 address`, name);
}

export function requireId(name, value) {
  if (typeof value === "string" && ID_RE.test(value)) return;
  requireStr(name, value);
  throw fail("invalid_value", `${name} must be 32 lower-case hex digits`, name);
}

function requireUtf8(name, value, limit) {
  if (!value.isWellFormed()) throw fail("invalid_value", `${name} is not valid Unicode`, name);
  const size = utf8(value).length;
  if (size > limit) throw fail("too_large", `${name} is ${size} bytes; the limit is ${limit}`, name);
}

function checkText(limit) {
  return (name, value) => {
    requireStr(name, value);
    requireUtf8(name, value, limit);
  };
}

function checkAddressList(name, value) {
  if (!Array.isArray(value)) throw fail("wrong_type", `${name} must be a list of addresses`, name);
  if (value.length > MAX_RECIPIENTS) throw fail("too_large", `${name} has more than ${MAX_RECIPIENTS} addresses`, name);
  value.forEach((item, i) => requireAddress(`${name}[${i}]`, item));
}

// Python's str.isspace() characters, for str.strip() (JavaScript's trim() differs: it has
// U+FEFF and lacks U+0085 and U+001C-U+001F).
const PY_SPACE = "\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000";
const isPySpace = (ch) => PY_SPACE.includes(ch);
export const pyStrip = (s) => {
  const chars = [...s];
  let a = 0;
  let b = chars.length;
  while (a < b && isPySpace(chars[a])) a++;
  while (b > a && isPySpace(chars[b - 1])) b--;
  return chars.slice(a, b).join("");
};
// Python's str.lower() and JavaScript's toLowerCase() both apply Unicode's full mappings,
// the final-sigma rule included ("ΑΣ" → "ας" in both).
export const pyLower = (s) => s.toLowerCase();

function checkTags(name, value) {
  if (!Array.isArray(value)) throw fail("wrong_type", "tags must be a list of strings", name);
  if (value.length > MAX_TAGS) throw fail("too_large", `more than ${MAX_TAGS} tags`, name);
  value.forEach((tag, i) => {
    const at = `tags[${i}]`;
    requireStr(at, tag);
    const chars = [...tag].length;
    if (!chars || chars > MAX_TAG_CHARS || tag !== pyLower(tag) || pyStrip(tag) !== tag) {
      throw fail("invalid_value", `${at} must be 1-${MAX_TAG_CHARS} lower-case characters`, at);
    }
    if (CONTROL_RE.test(tag)) throw fail("invalid_value", `${at} must not hold control characters`, at);
    requireUtf8(at, tag, 4 * MAX_TAG_CHARS);
  });
}

function checkExpires(name, value) {
  requireInt(name, value);
  if (value < 0) throw fail("invalid_value", "expires must be 0 or a time in ms", name);
}

function checkEncrypted(name, value) {
  // its type first, then its value (§4.3 step 4): "true" is the wrong type, false a wrong value
  if (typeof value !== "boolean") throw fail("wrong_type", "encrypted, when present, must be the boolean true", name);
  if (value !== true) throw fail("invalid_value", "encrypted, when present, must be true", name);
}

function checkB64(name, value) {
  requireStr(name, value);
  b64d(value, name);
}

function checkContentEnc(name, value) {
  requireStr(name, value);
  if (value.length > Math.floor((MAX_CONTENT_BYTES + 28 + 2) / 3) * 4) {
    throw fail("too_large", `${name} is larger than ${MAX_CONTENT_BYTES} bytes of content`, name);
  }
  b64d(value, name);
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

function checkEncRecipients(name, value) {
  if (!isObject(value)) throw fail("wrong_type", "enc_recipients must be an object of address -> blob", name);
  // {} has the right type and a wrong value (§4.3)
  if (!Object.keys(value).length) throw fail("invalid_value", "enc_recipients must name at least one reader", name);
  if (Object.keys(value).length > MAX_RECIPIENTS + 1) throw fail("too_large", "enc_recipients has too many entries", name);
  for (const [addr, blob] of Object.entries(value)) {
    // a key that is not an address cannot be used in a field name: the object is named (§4.3)
    if (!ADDRESS_RE.test(addr)) throw fail("invalid_value", `a key of ${name} is not an fx1 address`, name);
    checkB64(`${name}.${addr}`, blob);
  }
}

function checkRoute(name, value) {
  if (!Array.isArray(value)) throw fail("wrong_type", "route must be a list", name);
  if (value.length > MAX_ROUTE_HOPS) throw fail("too_large", `route has more than ${MAX_ROUTE_HOPS} entries`, name);
  value.forEach((entry, i) => {
    if (!isObject(entry) || Object.keys(entry).some((k) => k !== "server" && k !== "t")) {
      throw fail("wrong_type", `route[${i}] must be {server, t}`, `route[${i}]`);
    }
    requireStr(`route[${i}].server`, entry.server);
    requireInt(`route[${i}].t`, entry.t);
  });
}

function checkChainShape(name, value) {
  if (!Array.isArray(value)) throw fail("wrong_type", "integrity_chain must be a list", name);
  if (value.length > MAX_ROUTE_HOPS) throw fail("too_large", `integrity_chain has more than ${MAX_ROUTE_HOPS} hops`, name);
  value.forEach((record, i) => {
    if (!isObject(record)) throw fail("wrong_type", `integrity_chain[${i}] must be an object`, `${name}[${i}]`);
  });
}

const ignore = () => undefined;

const REQUIRED = {
  v: requireStr, id: requireId, from: requireAddress, to: requireAddress, t: requireInt,
  content: checkText(MAX_CONTENT_BYTES), sig: requireStr, pub: requireStr,
};
const OPTIONAL = {
  subject: checkText(MAX_SUBJECT_BYTES), re: requireId, cc: checkAddressList, bcc: checkAddressList,
  tags: checkTags, expires: checkExpires, route: checkRoute, integrity_chain: checkChainShape,
  encrypted: checkEncrypted, content_enc: checkContentEnc, enc_recipients: checkEncRecipients,
  ...Object.fromEntries(RETRIEVAL.map((name) => [name, ignore])),
};
const CHECKS = new Map(Object.entries({ ...REQUIRED, ...OPTIONAL }));
const ENCRYPTION_FIELDS = ["encrypted", "content_enc", "enc_recipients"];

/**
 * Throw the first shape error of `msg` (§4.3 steps 1-5), as flux.protocol.check_shape.
 * (Fields are judged in the object's key order, which in JavaScript puts integer-like
 * keys first: only which of two errors is reported can differ, never whether.)
 * @throws {FluxError} wrong_type, missing_field, unknown_version, invalid_value, too_large
 */
export function checkShape(msg) {
  if (!isObject(msg)) throw fail("wrong_type", "a message must be a JSON object", "message");
  for (const name of Object.keys(REQUIRED)) {
    if (!Object.hasOwn(msg, name)) throw fail("missing_field", `${name} is required`, name);
  }
  requireStr("v", msg.v);
  if (msg.v !== VERSION) {
    throw fail("unknown_version", `unknown version ${JSON.stringify(msg.v.slice(0, 16))}; this is ${VERSION}`, "v");
  }
  for (const [name, value] of Object.entries(msg)) {
    const check = CHECKS.get(name);
    if (check === undefined) throw fail("invalid_value", `unknown field ${JSON.stringify(name.slice(0, 40))}`, name.slice(0, 40));
    check(name, value);
  }
  const count = 1 + (msg.cc?.length ?? 0) + (msg.bcc?.length ?? 0);
  if (count > MAX_RECIPIENTS) throw fail("too_large", `${count} recipients; the limit is ${MAX_RECIPIENTS}`, "cc");
  const parts = ENCRYPTION_FIELDS.filter((k) => Object.hasOwn(msg, k));
  if (parts.length && parts.length !== 3) {
    const missing = ENCRYPTION_FIELDS.filter((k) => !parts.includes(k)).sort()[0];
    throw fail("missing_field", `an encrypted message needs ${missing}`, missing);
  }
  if (parts.length && msg.content !== ENCRYPTED_PLACEHOLDER) {
    throw fail("invalid_value", "an encrypted message's content must be '[encrypted]'", "content");
  }
}

export function checkFreshness(t, nowMs, maxSkewMs = MAX_CLOCK_SKEW_MS) {
  if (t < nowMs - maxSkewMs) throw fail("stale", `t is ${Math.floor((nowMs - t) / 1000)} s in the past`, "t");
  if (t > nowMs + maxSkewMs) throw fail("future", `t is ${Math.floor((t - nowMs) / 1000)} s in the future`, "t");
}

/** Key ↔ address binding, then the signature (§4.3 steps 7, 8). */
export async function checkSignature(msg) {
  const pub = b64d(msg.pub, "pub", 32);
  if ((await addressFromPub(pub)) !== msg.from) throw fail("address_mismatch", "pub does not hash to from", "pub");
  const sig = b64d(msg.sig, "sig", 64);
  if (!(await verifySignature(pub, signingPayload(msg), sig))) {
    throw fail("bad_signature", "sig does not verify over the message", "sig");
  }
}

/**
 * Verify a received envelope (§4.3). Never throws for a bad envelope (only for
 * insecure_context): returns {ok: true} or {ok: false, code, field, reason}.
 * `options.nowMs`: also check freshness (§4.3 step 6, as a server does at submission).
 */
export async function verifyEnvelope(msg, { nowMs = undefined } = {}) {
  try {
    checkShape(msg);
    if (nowMs !== undefined) checkFreshness(msg.t, nowMs);
    await checkSignature(msg);
    return { ok: true };
  } catch (err) {
    if (!(err instanceof FluxError) || err.code === "insecure_context") throw err;
    return { ok: false, code: err.code, field: err.field, reason: err.message };
  }
}

/** A new object: `fields` plus route: [], integrity_chain: [], sig and pub by `signer`. */
export async function signEnvelope(fields, signer) {
  if (fields.from !== signer.address) throw fail("invalid_value", "from must be the signing identity's address", "from");
  const signed = { ...fields };
  if (!Object.hasOwn(signed, "route")) signed.route = [];
  if (!Object.hasOwn(signed, "integrity_chain")) signed.integrity_chain = [];
  signed.sig = await signer.signB64(signingPayload(signed));
  signed.pub = signer.pubB64;
  return signed;
}
