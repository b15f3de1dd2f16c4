// Trust made visible: what can be checked about a message, checked in this browser.
//
// - The sender's signature (PROTOCOL §4.3), with js/flux verifyEnvelope: in both ways in,
//   since checking needs no key of ours. When the protocol module cannot run (no WebCrypto:
//   not a secure context), the view says the server checked it on arrival (it refuses
//   every message whose signature fails) and that this browser did not.
// - The hop chain (§7.3) with js/flux verifyChain, each seal under the keys its server
//   publishes, fetched through this server (/web/keys/{server}: this page may talk to its
//   own origin only). A server whose keys this server has no record of is "unknown": its
//   hops are shown as not verified, with a warning, never as sealed (`checkRoute`).
// - Names: the first key seen for a name@domain is remembered in this browser
//   (localStorage); a later message under that name from another key gets a warning, as
//   SSH does for a host key.
//
// Each check gives {state: "ok"|"warn"|"bad"|"unknown", text} in plain language.

import { call } from "./api.js";
import { mixedScripts, hasDisguise } from "./dom.js";

const SEEN_KEY = "flux.seen-names.v1";

export function seenNames() {
  try {
    return JSON.parse(localStorage.getItem(SEEN_KEY) || "{}") || {};
  } catch {
    return {};
  }
}

function saveSeen(seen) {
  try {
    localStorage.setItem(SEEN_KEY, JSON.stringify(seen));
  } catch {
    /* storage full or disabled: the check then starts afresh next time */
  }
}

/** Remember (or compare) the key behind a name: {state, text} or null without a name. */
export function checkName(name, address) {
  if (!name) return null;
  const seen = seenNames();
  const key = name.toLowerCase();
  if (!seen[key]) {
    seen[key] = address;
    saveSeen(seen);
    return { state: "ok", text: `First message from ${name} seen in this browser; its key is now remembered.` };
  }
  if (seen[key] !== address) {
    return {
      state: "bad",
      text: `Warning: ${name} was a different key (${seen[key].slice(0, 14)}…) when you last saw it. This may not be the same person.`,
      accept: () => {
        const s = seenNames();
        s[key] = address;
        saveSeen(s);
      },
    };
  }
  return { state: "ok", text: `${name} has the same key as before.` };
}

/** Thrown by `ServerKeys.lookup` for a server whose keys are not known here. */
export class UnknownServerKeys extends Error {
  constructor(server) {
    super(`your server has no key on record for ${server}`);
    this.name = "UnknownServerKeys";
    this.server = server;
  }
}

/** Keys of each server, cached for the page's life. */
export class ServerKeys {
  constructor(api) {
    this.api = api;
    this.docs = new Map(); // server -> {keys, retired_keys}, or null: not known here
  }

  async fetch(servers) {
    await Promise.all(
      [...new Set(servers)].filter((s) => !this.docs.has(s)).map(async (server) => {
        try {
          const doc = await this.api.get("/web/keys/" + encodeURIComponent(server));
          this.docs.set(server, { keys: doc.keys, retired_keys: [] });
        } catch {
          this.docs.set(server, null); // unknown here: the seal cannot be checked
        }
      }),
    );
  }

  /**
   * The keys `server` publishes ({keys, retired_keys}), as fetched by `fetch`. Throws
   * UnknownServerKeys for a server whose keys are not known here (never fetched, or this
   * server has none on record for it): an unknown key is never an empty list that the
   * caller could read as "publishes nothing" or, worse, skip. js/flux verifyChain takes the
   * throw as "publishes none" (the hop fails, naming the reason); checkMessage turns that
   * into its own plain warning (`unknownKeys`).
   */
  lookup = (server) => {
    const doc = this.docs.get(server);
    if (!doc) throw new UnknownServerKeys(server);
    return doc;
  };

  /** Whether `server`'s keys are known here (after `fetch`). */
  known(server) {
    return !!this.docs.get(server);
  }
}

const HOP_WORDS = {
  // The page may talk only to its own server (CSP), so another server's keys reach it
  // through yours (/web/keys): say whose word the check rests on.
  sealed: "seal verified under the key your server has on record for it",
  unsealed: "an old-style record: signed, but proves nothing about order",
  failed: "does not verify",
  unknown: "not verified: your server has no key on record for this server (its seal holds only under the key the record itself names)",
};

/**
 * Check one message: {signature, chain: {verdict, hops, text, state, blame}, name, look}.
 * `chain.blame`: js/flux verifyChain's {kind, offender, ...} when a server's own seal
 * proves an offense (§7.4), else null; views.js marks that server's hop.
 * `flux` is the protocol module, or null when it cannot run here.
 */
export async function checkMessage(flux, keys, msg) {
  const out = { signature: null, chain: null, name: null, look: null };
  if (flux) {
    try {
      const v = await flux.verifyEnvelope(msg);
      out.signature = v.ok
        ? { state: "ok", text: "Signature verified in this browser: the sender's key signed exactly this message." }
        : { state: "bad", text: `Bad signature (${v.code || "invalid"}${v.field ? ", " + v.field : ""}): this message was not signed as shown by the key it names. Do not trust it.` };
    } catch (err) {
      out.signature = { state: "unknown", text: "The signature could not be checked in this browser: " + (err.message || err) };
    }
  } else {
    out.signature = { state: "unknown", text: "Signature checked by the server on arrival (it refuses mail whose signature fails); this browser could not check it itself." };
  }
  const records = Array.isArray(msg.integrity_chain) ? msg.integrity_chain : [];
  if (flux) {
    try {
      out.chain = await checkRoute(flux, keys, msg, records);
    } catch (err) {
      out.chain = { state: "unknown", text: "The route could not be checked in this browser: " + (err.message || err), hops: [] };
    }
  } else {
    out.chain = {
      state: "unknown",
      text: "Route not checked in this browser.",
      hops: records.map((r) => ({ server: r && r.server, t: r && r.t, status: "unchecked", text: "not checked here" })),
    };
  }
  out.name = checkName(msg._from_name, msg.from);
  const shown = `${msg._from_name || ""}${msg.subject || ""}`;
  if (hasDisguise(shown) || mixedScripts(msg._from_name || "")) {
    out.look = { state: "warn", text: "The sender's name or the subject holds characters that can disguise text (shown as [U+…]) or mixes alphabets that look alike." };
  }
  return out;
}

/**
 * The route check: every seal under the keys its server publishes (as your server knows
 * them). A server whose keys are not known here is neither verified nor proof of
 * tampering: when the strict check fails at such a server only for want of its key, the
 * chain is checked again with that server's records taken under their own keys, to tell
 * "intact, but X could not be checked" (a warning) from a chain broken anyway (an alarm).
 * Hops of unknown servers are never shown as sealed.
 */
async function checkRoute(flux, keys, msg, records) {
  await keys.fetch(records.map((r) => r && r.server).filter((s) => typeof s === "string"));
  const strict = await flux.verifyChain(msg, keys.lookup);
  const unknown = new Set(records.map((r) => r && r.server).filter((s) => typeof s === "string" && !keys.known(s)));
  const firstFailure = (strict.hops || []).find((hop) => hop.status === "failed");
  let c = strict;
  let unchecked = new Set();
  if (firstFailure && unknown.has(firstFailure.server) && /no key on record/.test(firstFailure.reason || "")) {
    // each unknown server's records as their own key: the rest of the chain is still judged
    const own = (server) => ({ keys: records.filter((r) => r && r.server === server && typeof r.pub === "string").map((r) => ({ pub: r.pub, valid_from: 0, valid_until: null })) });
    c = await flux.verifyChain(msg, (server) => (unknown.has(server) ? own(server) : keys.lookup(server)));
    unchecked = unknown;
  }
  const hops = (c.hops || []).map((hop, i) => {
    const server = hop.server ?? (records[i] && records[i].server);
    const status = hop.status === "sealed" && unchecked.has(server) ? "unknown" : hop.status;
    return { server, t: hop.t ?? (records[i] && records[i].t), status, text: HOP_WORDS[status] || status, reason: hop.reason || null };
  });
  let state = "ok";
  let text = `Route verified: ${hops.length} server${hops.length === 1 ? "" : "s"} handled this message and each sealed it.`;
  const notChecked = [...new Set(hops.filter((hop) => hop.status === "unknown").map((hop) => hop.server))];
  if (c.verdict === "none") {
    state = "warn";
    text = "No route record: no server vouched for how this message travelled.";
  } else if (c.verdict === "fail") {
    state = "bad";
    const failed = hops.find((hop) => hop.status === "failed");
    text = `Broken chain: the route record does not verify${failed ? ` at ${failed.server} (${failed.reason || "failed"})` : ""}. The message may have been changed on the way.`;
  } else if (notChecked.length) {
    state = "warn";
    text = `Route not fully verified: your server has no key on record for ${notChecked.join(", ")}, so ${notChecked.length === 1 ? "its seal" : "their seals"} could not be checked. The rest of the route holds.`;
  } else if (hops.some((hop) => hop.status === "unsealed")) {
    state = "warn";
    text = "Route partly verified: some servers wrote old-style records that prove nothing about order.";
  }
  if (c.blame) {
    // the blame replaces, never follows, the sentences above: a genuine seal on a forgery
    // is no "Route verified" (views.js marks the blamed hop from `blame`)
    const who = typeof c.blame === "string" ? c.blame : c.blame.offender || "?";
    const why = BLAME_WORDS[c.blame && c.blame.kind] || "something it should have refused";
    const unsure = unchecked.has(who) ? " (its key is not on record here, so this cannot be confirmed)" : "";
    text = `Blamed server: ${who}: its own seal proves it passed this message on with ${why}${unsure}. Do not trust this message.`;
    state = "bad";
  }
  return { state, text, hops, verdict: c.verdict, blame: c.blame || null };
}

/** Each kind of blame (PROTOCOL §7.4) in plain words, ending "passed this message on with". */
const BLAME_WORDS = {
  forged_body: "content that the key it names did not sign (changed after signing, or never signed by that key)",
  false_hop: "a record of its own hop that does not match the message it sealed",
  broken_chain: "a route record that does not verify, while vouching that it did",
};

/** Server-side report (used when the browser cannot check): POST /integrity/verify. */
export function serverReport(msg) {
  const clean = {};
  for (const [k, v] of Object.entries(msg)) if (!k.startsWith("_")) clean[k] = v;
  return call("POST", "/integrity/verify", { body: clean });
}
