// Where each recipient of a reply-all lives (its home server), for the Cc field.
//
// An envelope's `to` and `cc` are bare fx1 addresses: they say who, not where. A reply
// must name each recipient's server (`fx1…@server`), or this server takes it for one of
// its own (or its relays') and the copy bounces as an unknown recipient. The old rule,
// "everyone at the original sender's server", sent a recipient hosted on a third server to
// a server that does not host it. The rule now, for each other recipient, in this order:
//
// 1. hosted here (this server's /federation/resolve knows it): written bare;
// 2. a home this browser knows: the first hop of a message it holds from that address (the
//    server that signed the route's first record: where the sender submitted it; never
//    from a message whose route check failed), else a home a lookup confirmed earlier
//    (`learnHome`, kept in localStorage per origin);
// 3. the original sender's server (its first hop, when its route did not fail the check),
//    when it confirms it hosts the address (/web/resolve);
// 4. otherwise it is unknown. It is then still put in the field, at the sender's server,
//    with a plain note under the field naming the address and the guess, so the person can
//    fix it before sending. Why kept rather than left out: a recipient silently missing
//    from a reply-all goes unnoticed (nothing bounces, the conversation just loses
//    someone), while a wrong guess is visible twice, in the note now and as a bounce with
//    its reason in sent mail; and the guessed server is the original sender's, which gets
//    this reply anyway (the sender is in To), so the guess shows the reply to no server
//    that would not have had it.

import { call } from "./api.js";

const HOMES_KEY = "flux.homes.v1";
const HOMES_KEPT = 500; // the most recent confirmed homes kept in this browser

function storedHomes() {
  try {
    const parsed = JSON.parse(localStorage.getItem(HOMES_KEY) || "{}");
    return parsed && typeof parsed === "object" && !Array.isArray(parsed) ? parsed : {};
  } catch {
    return {};
  }
}

/** Remember that `address` is hosted at `domain` (a lookup there confirmed it). */
export function learnHome(address, domain) {
  if (!address || !domain) return;
  const homes = storedHomes();
  delete homes[address]; // re-inserted last: the newest are the ones kept
  homes[address] = domain;
  const names = Object.keys(homes);
  for (const old of names.slice(0, Math.max(0, names.length - HOMES_KEPT))) delete homes[old];
  try {
    localStorage.setItem(HOMES_KEY, JSON.stringify(homes));
  } catch {
    /* storage full or disabled: the home is looked up again next time */
  }
}

/** The server that made the first record of `msg`'s route (where its sender submitted it). */
export function firstHopServer(msg) {
  const first = (Array.isArray(msg.integrity_chain) && msg.integrity_chain[0]) || (Array.isArray(msg.route) && msg.route[0]);
  return first && typeof first.server === "string" ? first.server : null;
}

/** address -> home server, from the mail this page holds (the first hop of mail from it,
 * when `hopUsable` allows it: not a message whose route check failed). */
function homesFromMail(mail, hopUsable) {
  const homes = new Map();
  for (const m of mail) {
    const server = m && hopUsable(m) && firstHopServer(m);
    if (server && typeof m.from === "string" && !homes.has(m.from)) homes.set(m.from, server);
  }
  return homes;
}

/** true when this server hosts `address`, false when it says it does not, null when it
 * could not be asked. */
async function hostedHere(address) {
  try {
    const b = await call("GET", "/federation/resolve/" + encodeURIComponent(address));
    return b.address === address;
  } catch (err) {
    return err.status === 404 ? false : null;
  }
}

/** true when `server` confirms it hosts `address` (its key hashing to it), else false:
 * /web/resolve answers 404 alike for "not hosted" and "not reachable", so no answer is
 * never taken as knowledge. */
async function confirmedAt(api, address, server) {
  try {
    const b = await api.get("/web/resolve/" + encodeURIComponent(`${address}@${server}`));
    if (b.address !== address) return false;
    if (b.pub) api.keys.set(address, b.pub);
    learnHome(address, server);
    return true;
  } catch {
    return false;
  }
}

/**
 * The Cc field of a reply-all to `msg`: {cc: [written], guesses: [{address, server, text}]}.
 * Everyone in `msg`'s to/cc but us and its sender (who goes in To), each written as the
 * rule above says; `guesses` are the recipients whose home is unknown, written at the
 * sender's server, each with the note to show. `mail`: every message the page holds.
 * `hopUsable(m)`: whether message m's first hop may be taken as its sender's home (the
 * page says no for a message whose route check failed: a relay that rewrote that record
 * would otherwise choose where the reply goes).
 * Lookups go one at a time (this server bounds the name lookups a caller has under way).
 */
export async function replyAllCc(api, msg, mail, hopUsable = () => true) {
  // a first hop whose record did not verify may be a relay's forgery: it places nobody
  const senderServer = hopUsable(msg) ? firstHopServer(msg) : null;
  const remoteSender = senderServer && senderServer !== api.domain ? senderServer : null;
  const others = [...new Set([msg.to, ...(Array.isArray(msg.cc) ? msg.cc : [])])].filter(
    (a) => typeof a === "string" && a && a !== api.address && a !== msg.from,
  );
  const fromMail = homesFromMail(mail, hopUsable);
  const stored = storedHomes();
  const cc = [];
  const guesses = [];
  for (const address of others) {
    const here = await hostedHere(address);
    if (here === true) {
      cc.push(address);
      continue;
    }
    const known = fromMail.get(address) || stored[address] || null;
    if (known && known !== api.domain) {
      cc.push(`${address}@${known}`);
      continue;
    }
    if (remoteSender && (await confirmedAt(api, address, remoteSender))) {
      cc.push(`${address}@${remoteSender}`);
      continue;
    }
    if (!remoteSender) {
      // the sender is one of ours (or its route did not verify), so the recipient's home has
      // no candidate at all: bare,
      // as written in the original (this server's relays, if any, may know it), with a note
      cc.push(address);
      guesses.push({ address, server: null, text: `Home server of ${address} unknown; it is written bare, for this server to route. Add @server if you know it.` });
      continue;
    }
    cc.push(`${address}@${remoteSender}`);
    guesses.push({ address, server: remoteSender, text: `Home server of ${address} unknown; guessed ${remoteSender} (the sender's server). Correct it before sending if you know better: a wrong server bounces the copy.` });
  }
  return { cc, guesses };
}

/** The guesses still standing in `fieldsText` (the person may have corrected some). */
export function standingGuesses(guesses, fieldsText) {
  const written = new Set(String(fieldsText || "").split(/[\s,;]+/).filter(Boolean));
  return (guesses || []).filter((g) => written.has(g.server ? `${g.address}@${g.server}` : g.address));
}
