// Hop records, the sealed chain and blame (docs/PROTOCOL.md §7.3, §7.4), as
// flux.protocol.chain.verify_chain and flux.protocol.tamper.find_offense.
//
// Every record gets a status: "sealed" (sealed, linked, signed under a key its server
// publishes for its `t`), "unsealed" (a prototype record whose own signature and hash hold)
// or "failed" (with a reason); a record after a failure fails too. Keys come from the
// caller's `keysOf(serverName)` (the server's published keys, §10.1): the page fetches them
// through its own origin. Without `keysOf`, seals are checked against the record's own key
// only, which shows the chain is intact but not who made it.

import { FluxError } from "./errors.js";
import { b64d, hex, utf8 } from "./bytes.js";
import { canonical, canonicalBytes, without } from "./canonical.js";
import { bodyHash, checkSignature, integrityHash, MAX_ROUTE_HOPS, SERVER_RE } from "./envelope.js";
import { verifySignature } from "./identity.js";
import { sha256 } from "./webcrypto.js";

const SEAL_CONTEXT = "flux-seal:1:";
const HEX64 = /^[0-9a-f]{64}$/;
const PROTOTYPE_SERVER_RE = /^[\x21-\x7e]{1,255}$/;
const PROTOTYPE_FIELDS = ["server", "t", "hash", "sig", "pub"];
const SEALED_FIELDS = [...PROTOTYPE_FIELDS, "i", "prev", "cv", "next", "bh", "seal"];
const VERDICTS = ["none", "pass", "fail"];

class HopFailure extends Error {}
const hopFail = (reason) => new HopFailure(reason);

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const isInt = (v) => Number.isSafeInteger(v);

/** SHA-256 hex of the record's canonical bytes, seal included (`prev` of the next record). */
export async function recordHash(record) {
  return hex(await sha256(canonicalBytes(record)));
}

const WITHOUT_SEAL = new Set(["seal"]);
const sealPayload = (record) => utf8(SEAL_CONTEXT + canonical(without(record, WITHOUT_SEAL)));

function sameKeys(record, names) {
  const keys = Object.keys(record);
  return keys.length === names.length && names.every((n) => Object.hasOwn(record, n));
}

/** Throw HopFailure for a malformed record; return true when it is sealed (§7.3 step 1). */
function checkRecordShape(record) {
  if (!isObject(record)) throw hopFail("record is not an object");
  const sealed = Object.hasOwn(record, "seal");
  if (!sameKeys(record, sealed ? SEALED_FIELDS : PROTOTYPE_FIELDS)) {
    throw hopFail("record fields are not those of a sealed or a prototype hop");
  }
  const nameRe = sealed ? SERVER_RE : PROTOTYPE_SERVER_RE;
  if (typeof record.server !== "string" || !nameRe.test(record.server)) throw hopFail("server is not a server name");
  if (record.server === "local") throw hopFail("'local' is reserved for next and names no server");
  if (!isInt(record.t)) throw hopFail("t is not an integer");
  if (typeof record.hash !== "string" || !HEX64.test(record.hash)) throw hopFail("hash is not 64 hex digits");
  if (sealed) {
    if (!isInt(record.i) || typeof record.next !== "string") throw hopFail("i or next has the wrong type");
    if (!VERDICTS.includes(record.cv)) throw hopFail("cv is not none, pass or fail");
    for (const name of ["prev", "bh"]) {
      const value = record[name];
      if (typeof value !== "string" || (value && !HEX64.test(value))) {
        throw hopFail(`${name} is not a SHA-256 hex digest`);
      }
    }
  }
  return sealed;
}

async function verifyPrototypeSig(record) {
  try {
    const pub = b64d(record.pub, "pub", 32);
    const sig = b64d(record.sig, "sig", 64);
    if (await verifySignature(pub, utf8(`${record.server}:${record.t}:${record.hash}`), sig)) return pub;
  } catch (err) {
    if (!(err instanceof FluxError) || err.code === "insecure_context") throw err;
  }
  throw hopFail("hop signature does not verify");
}

/** The seal verifies under the record's pub, which `keys` (if given) publishes at its t. */
async function verifySeal(record, keys) {
  let pub;
  try {
    pub = b64d(record.pub, "pub", 32);
    const seal = b64d(record.seal, "seal", 64);
    if (!(await verifySignature(pub, sealPayload(record), seal))) throw hopFail("seal does not verify");
  } catch (err) {
    if (err instanceof FluxError && err.code === "insecure_context") throw err;
    throw hopFail("seal does not verify");
  }
  if (keys && !(await keys.covers(record.server, pub, record.t))) {
    throw hopFail(keys.failure(record.server) ?? `key is not one ${record.server} publishes for that time`);
  }
}

async function checkOwn(record, index, keys, hashes) {
  const sealed = checkRecordShape(record);
  await verifyPrototypeSig(record);
  if (record.hash !== hashes.hash) throw hopFail("hash does not match the message");
  if (!sealed) return "unsealed";
  await verifySeal(record, keys);
  if (record.i !== index + 1) throw hopFail(`i is ${record.i}, but the record is number ${index + 1}`);
  if (record.bh !== hashes.bh) throw hopFail("bh does not match the message body");
  if ((record.cv === "none") !== (index === 0)) throw hopFail(`cv is '${record.cv}' for record number ${index + 1}`);
  return "sealed";
}

async function checkLink(chain, index) {
  const record = chain[index];
  let expected = "";
  if (index) {
    try {
      expected = await recordHash(chain[index - 1]);
    } catch (err) {
      if (err instanceof FluxError && err.code === "insecure_context") throw err;
      expected = null; // not FLUX JSON: nothing can link to it
    }
  }
  if (record.prev !== expected) throw hopFail("prev does not match the previous record");
  const previous = index ? chain[index - 1] : null;
  if (isObject(previous) && Object.hasOwn(previous, "seal") && previous.next !== record.server) {
    throw hopFail(`the previous hop sent the message to ${previous.next}, not here`);
  }
}

// -- published keys --------------------------------------------------------------------------

function parseKeys(doc) {
  const entries = Array.isArray(doc) ? doc : [...(doc?.keys ?? []), ...(doc?.retired_keys ?? [])];
  const out = [];
  for (const e of entries) {
    if (!isObject(e)) continue;
    try {
      const validFrom = e.valid_from ?? 0;
      const validUntil = e.valid_until ?? null;
      if (!isInt(validFrom) || !(validUntil === null || isInt(validUntil))) continue;
      out.push({ pub: hex(b64d(e.pub, "keys.pub", 32)), validFrom, validUntil });
    } catch {
      continue; // an unreadable entry publishes nothing
    }
  }
  return out;
}

/** Wraps the caller's keysOf: each server asked at most once; a failure is remembered. */
class KeyTable {
  constructor(keysOf) {
    this.keysOf = keysOf;
    this.found = new Map();
    this.failures = new Map();
  }

  async of(server) {
    if (!this.found.has(server)) {
      let keys = [];
      try {
        keys = parseKeys(await this.keysOf(server));
      } catch (err) {
        this.failures.set(server, `could not get the keys ${server} publishes: ${err?.message ?? err}`);
      }
      this.found.set(server, keys);
    }
    return this.found.get(server);
  }

  async covers(server, pub, t) {
    const pubHex = hex(pub);
    return (await this.of(server)).some(
      (k) => k.pub === pubHex && k.validFrom <= t && (k.validUntil === null || t <= k.validUntil),
    );
  }

  failure(server) {
    return this.failures.get(server);
  }
}

// -- verification ----------------------------------------------------------------------------

async function hashesOf(msg) {
  return { hash: await integrityHash(msg), bh: await bodyHash(msg) };
}

async function checkChain(msg, keys) {
  const chain = msg.integrity_chain ?? [];
  if (!Array.isArray(chain)) {
    return [{ index: 0, server: "?", t: null, status: "failed", reason: "integrity_chain is not a list" }];
  }
  const hashes = await hashesOf(msg);
  const hops = [];
  let broken = false;
  for (const [index, record] of chain.entries()) {
    // the record's server when it is a string, else "?" (§7.3; a number's text would read as a name)
    const server = isObject(record) && typeof record.server === "string" ? record.server : "?";
    const t = isObject(record) && isInt(record.t) ? record.t : null;
    if (broken) {
      hops.push({ index, server, t, status: "failed", reason: "follows a failed hop" });
      continue;
    }
    try {
      const status = await checkOwn(record, index, keys, hashes);
      if (status === "sealed") await checkLink(chain, index);
      hops.push({ index, server, t, status, reason: null });
    } catch (err) {
      if (!(err instanceof HopFailure)) throw err;
      broken = true;
      hops.push({ index, server, t, status: "failed", reason: err.message });
    }
  }
  return hops;
}

const verdictOf = (hops) => (!hops.length ? "none" : hops.some((h) => h.status === "failed") ? "fail" : "pass");

/**
 * Verify `msg`'s chain (§7.3). Never throws for a bad chain (only insecure_context).
 *
 * @param {object} msg  the envelope as received
 * @param {(server: string) => any} [keysOf]  the keys `server` publishes: its /federation/info
 *   document ({keys, retired_keys}) or a list of {pub, valid_from, valid_until}; may be async;
 *   a throw counts as "publishes none". Omitted or null: offline (each seal under its own pub).
 * @returns {Promise<{verdict: "none"|"pass"|"fail", hops: {index, server, t, status, reason}[],
 *   blame: null|{kind, offender, msg_id, proof_id, detail}}>}  `blame`: the first server
 *   whose own seal proves it handed on a forged body, a false hop or a broken chain (§7.4),
 *   judged at each hand-off as its receiver would (the last one as delivered, to its `next`).
 */
export async function verifyChain(msg, keysOf = null) {
  const keys = keysOf ? new KeyTable(keysOf) : null;
  const hops = await checkChain(msg, keys);
  const verdict = verdictOf(hops);
  // Every offense shows as a failure first (a forged body fails the sender's signature; a
  // false hop or a broken chain fails a record), so a clean message costs no blame search.
  const suspect = verdict === "fail" || !(await signatureHolds(msg));
  const blame = keys && suspect ? await firstOffense(msg, keys) : null;
  return { verdict, hops, blame };
}

async function signatureHolds(msg) {
  try {
    await checkSignature(msg);
    return true;
  } catch (err) {
    if (!(err instanceof FluxError) || err.code === "insecure_context") throw err;
    return false;
  }
}

// -- blame (§7.4) ----------------------------------------------------------------------------

async function committedStart(chain) {
  let index = chain.length - 1;
  while (index > 0) {
    const record = chain[index];
    if (!(isObject(record) && Object.hasOwn(record, "seal"))) break;
    let linked;
    try {
      linked = record.prev === (await recordHash(chain[index - 1]));
    } catch (err) {
      if (err instanceof FluxError && err.code === "insecure_context") throw err;
      linked = false;
    }
    if (!linked) break;
    index -= 1;
  }
  return Math.max(index, 0);
}

async function firstCommittedFailure(msg) {
  const chain = msg.integrity_chain;
  if (!Array.isArray(chain) || !chain.length) return null;
  const start = await committedStart(chain);
  const hashes = await hashesOf(msg);
  for (let index = start; index < chain.length; index++) {
    try {
      const status = await checkOwn(chain[index], index, null, hashes);
      if (status === "sealed" && (index > start || index === 0)) await checkLink(chain, index);
    } catch (err) {
      if (!(err instanceof HopFailure)) throw err;
      return { index, reason: err.message };
    }
  }
  return null;
}

async function boundSeal(msg, keys, receiver) {
  const chain = msg.integrity_chain;
  const last = chain[chain.length - 1];
  try {
    if (!checkRecordShape(last)) return null;
    await verifySeal(last, keys);
  } catch (err) {
    if (!(err instanceof HopFailure)) throw err;
    return null;
  }
  let expectedPrev = "";
  if (chain.length > 1) {
    try {
      expectedPrev = await recordHash(chain[chain.length - 2]);
    } catch {
      return null;
    }
  }
  const bound = last.next === receiver && last.i === chain.length && last.prev === expectedPrev && last.bh === (await bodyHash(msg));
  return bound ? last : null;
}

async function offenseOf(msg, last) {
  if (!["from", "pub", "sig"].every((n) => typeof msg[n] === "string")) {
    return ["forged_body", "sealed a message without a sender signature"];
  }
  try {
    await checkSignature(msg);
  } catch (err) {
    if (!(err instanceof FluxError) || err.code === "insecure_context") throw err;
    return ["forged_body", `sealed a message whose ${err.message}`];
  }
  if (last.hash !== (await integrityHash(msg))) return ["false_hop", "its hop hash does not match the message it sealed"];
  try {
    await verifyPrototypeSig(last);
  } catch (err) {
    if (!(err instanceof HopFailure)) throw err;
    return ["false_hop", "its hop signature does not verify"];
  }
  if (last.cv === "fail") return null; // it declared the chain broken: honest, if unhelpful
  const bad = await firstCommittedFailure(msg);
  if (bad === null) return null;
  return ["broken_chain", `sealed '${last.cv}' over a chain whose hop ${bad.index} ${bad.reason}`];
}

/**
 * The offense the last record's server provably committed in handing `msg` to `receiver`
 * (§7.4), or null (innocent, or nothing provable). As flux.protocol.tamper.find_offense.
 * @returns {Promise<null|{kind, offender, msg_id, proof_id, detail}>}
 */
export async function findOffense(msg, keysOf, receiver) {
  const keys = keysOf instanceof KeyTable ? keysOf : new KeyTable(keysOf);
  const chain = isObject(msg) ? msg.integrity_chain : null;
  if (!Array.isArray(chain) || chain.length < 1 || chain.length > MAX_ROUTE_HOPS) return null;
  const last = await boundSeal(msg, keys, receiver);
  if (last === null) return null;
  const offense = await offenseOf(msg, last);
  if (offense === null) return null;
  return {
    kind: offense[0],
    offender: last.server,
    msg_id: String(msg.id),
    proof_id: hex(await sha256(utf8(last.seal))),
    detail: offense[1],
  };
}

async function firstOffense(msg, keys) {
  const chain = msg.integrity_chain;
  if (!Array.isArray(chain) || chain.length > MAX_ROUTE_HOPS) return null;
  for (let k = 0; k < chain.length; k++) {
    const record = chain[k];
    if (!isObject(record) || !Object.hasOwn(record, "seal")) continue;
    const receiver = k + 1 < chain.length ? chain[k + 1]?.server : record.next;
    const offense = await findOffense({ ...msg, integrity_chain: chain.slice(0, k + 1) }, keys, receiver);
    if (offense) return offense;
  }
  return null;
}
