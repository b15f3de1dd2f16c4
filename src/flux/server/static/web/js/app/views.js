// Rendering: mailboxes, message rows, the reader, delivery state. Pure functions of the
// data they are given, building elements with dom.js (text only, never HTML).

import { h, safe, visible, visibleText } from "./dom.js";

export const keyOf = (msg) => `${msg.from}|${msg.id}`;

/** An address shortened for rows, toasts and tables: its first 14 and last 6 characters.
 * 17 hex digits beyond "fx1": 68 bits to match for a look-alike key; the 10 + 4 shown
 * before were 44 bits, within reach of grinding keys on ordinary hardware. */
export function shortAddress(address) {
  const a = String(address || "");
  return a.length > 22 ? `${a.slice(0, 14)}…${a.slice(-6)}` : a;
}

export function when(ms) {
  if (typeof ms !== "number") return "";
  const d = new Date(ms);
  const now = new Date();
  const sameDay = d.toDateString() === now.toDateString();
  return sameDay
    ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : d.toLocaleDateString([], { year: "numeric", month: "short", day: "numeric" });
}

export function fullTime(ms) {
  return typeof ms === "number" ? new Date(ms).toLocaleString() : "";
}

export const unread = (msg) => msg._status === "pending" || msg._status === "delivered";
export const isEncrypted = (msg) => msg.encrypted === true;

/** What to show as the body: decrypted text, the content, or a note. */
export function bodyText(msg, plain) {
  if (!isEncrypted(msg)) return String(msg.content ?? "");
  if (plain && typeof plain.text === "string") return plain.text;
  return null;
}

export function senderLabel(msg) {
  return msg._from_name || shortAddress(msg.from);
}

/** The mailbox list: [{key, label, count, current}] -> <ul>. */
export function renderBoxes(boxes, onPick) {
  return h(
    "ul",
    { class: "box-list" },
    boxes.map((b) =>
      h(
        "li",
        null,
        h(
          "button",
          {
            type: "button",
            class: "box" + (b.current ? " current" : ""),
            "aria-current": b.current ? "page" : null,
            dataset: { box: b.key },
            onclick: () => onPick(b),
          },
          b.tag ? h("span", { class: "tagmark", "aria-hidden": "true" }, "#") : null,
          safe(b.label),
          b.count ? h("span", { class: "count", "aria-label": `${b.count} unread` }, String(b.count)) : null,
        ),
      ),
    ),
  );
}

function tagChips(tags) {
  return (tags || []).map((t) => h("span", { class: "chip", title: visible(t) }, safe(t)));
}

/** One row of a mailbox list. */
export function renderRow(msg, plain, selected, onOpen) {
  const text = bodyText(msg, plain);
  const snippet = text === null ? "Encrypted" : text.slice(0, 160).replace(/\s+/g, " ");
  const classes = ["row"];
  if (unread(msg)) classes.push("unread");
  if (selected) classes.push("selected");
  return h(
    "li",
    {
      role: "option",
      class: classes.join(" "),
      "aria-selected": selected ? "true" : "false",
      id: "row-" + msg.id + "-" + msg.from.slice(-8),
      dataset: { key: keyOf(msg) },
      onclick: () => onOpen(msg),
    },
    h("span", { class: "from" }, safe(senderLabel(msg))),
    h("span", { class: "subject" }, safe(msg.subject || "(no subject)")),
    h("span", { class: "snippet" }, visible(snippet)),
    h(
      "span",
      { class: "meta" },
      isEncrypted(msg) ? h("span", { class: "lock", title: "encrypted end to end", role: "img", "aria-label": "encrypted" }) : null,
      h("time", { datetime: new Date(msg.t).toISOString() }, when(msg.t)),
      h("span", { class: "status" }, unread(msg) ? "unread" : msg._status || ""),
      msg._inbox && msg._inbox !== "inbox" ? h("span", { class: "chip folder" }, safe(msg._inbox)) : null,
      tagChips(msg._tags),
    ),
  );
}

const STATE_WORDS = {
  stored: "delivered to the mailbox on this server",
  queued: "waiting for the receiving server",
  delivered: "delivered to the receiving server",
  bounced: "bounced",
};

/** Summary of a sent message's delivery: "2 delivered, 1 queued". */
export function deliverySummary(delivery) {
  const counts = {};
  for (const d of Object.values(delivery || {})) counts[d.state] = (counts[d.state] || 0) + 1;
  return Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(", ");
}

/** The BCC recipients of a sent record: its `bcc` (a BCC copy's, kept until the primary
 * reaches the server) and every recipient in its delivery state that is not in `to`/`cc`.
 * The server merges each BCC copy's recipient into the message's one record (docs/API.md,
 * "Sent mail"); the primary envelope names none of them, and only the sender's own record
 * does. */
export function bccOf(msg) {
  const shown = new Set([msg.to, ...(msg.cc || [])]);
  const out = new Set(Array.isArray(msg.bcc) ? msg.bcc : []);
  for (const who of Object.keys(msg._delivery || {})) if (!shown.has(who)) out.add(who);
  return [...out].filter((a) => !shown.has(a));
}

/** A sent message row. */
export function renderSentRow(msg, plain, selected, onOpen) {
  const bcc = bccOf(msg);
  const to = [msg.to, ...(msg.cc || [])].map(shortAddress).join(", ") + (bcc.length ? " · Bcc: " + bcc.map(shortAddress).join(", ") : "");
  const text = bodyText(msg, plain);
  return h(
    "li",
    {
      role: "option",
      class: "row sent" + (selected ? " selected" : ""),
      "aria-selected": selected ? "true" : "false",
      id: "sent-" + msg.id,
      dataset: { key: keyOf(msg) },
      onclick: () => onOpen(msg),
    },
    h("span", { class: "from" }, "To: ", safe(to)),
    h("span", { class: "subject" }, safe(msg.subject || "(no subject)")),
    h("span", { class: "snippet" }, text === null ? "Encrypted" : visible(text.slice(0, 160).replace(/\s+/g, " "))),
    h(
      "span",
      { class: "meta" },
      isEncrypted(msg) ? h("span", { class: "lock", title: "encrypted end to end", role: "img", "aria-label": "encrypted" }) : null,
      h("time", null, when(msg._sent_at || msg.t)),
      h("span", { class: "delivery-summary" }, deliverySummary(msg._delivery)),
    ),
  );
}

/** The per-recipient delivery table of a sent message (`msg`: its record, to mark BCC). */
export function renderDelivery(delivery, msg = null) {
  const bcc = new Set(msg ? bccOf(msg) : []);
  const rows = Object.entries(delivery || {}).map(([who, d]) => {
    let detail = STATE_WORDS[d.state] || d.state;
    if (d.state === "bounced" && d.reason) detail = `bounced: ${d.reason}`;
    if (d.state === "queued") {
      detail += d.attempts ? ` (${d.attempts} attempt${d.attempts === 1 ? "" : "s"}` + (d.error ? `; last: ${d.error}` : "") + ")" : "";
    }
    return h(
      "tr",
      { class: "delivery-" + d.state, dataset: { recipient: who } },
      h("td", { title: who }, h("code", null, shortAddress(who)), bcc.has(who) ? h("span", { class: "chip bcc" }, "bcc") : null),
      h("td", { class: "state" }, visible(d.state)),
      h("td", null, visible(detail)),
      h("td", null, fullTime(d.at)),
    );
  });
  return h(
    "table",
    { class: "delivery" },
    h("caption", null, "Delivery, per recipient"),
    h("thead", null, h("tr", null, h("th", { scope: "col" }, "Recipient"), h("th", { scope: "col" }, "State"), h("th", { scope: "col" }, "Detail"), h("th", { scope: "col" }, "Since"))),
    h("tbody", null, rows),
  );
}

function checkLine(check, label) {
  if (!check) return null;
  const icon = { ok: "✔", warn: "⚠", bad: "✖", unknown: "?" }[check.state] || "?";
  return h("li", { class: "check " + check.state }, h("span", { class: "icon", "aria-hidden": "true" }, icon), h("strong", null, label + ": "), visible(check.text));
}

/** The trust panel: signature, route (each hop), name, look-alikes. */
export function renderTrust(trust, onAcceptName) {
  if (!trust) return h("section", { class: "trust pending", "aria-label": "Checks" }, "Checking…");
  const hops = (trust.chain && trust.chain.hops) || [];
  // the server a proof blames (trust.js gives it as chain.blame, {offender, ...} or a
  // name): its hop is marked, so a genuine seal is not read as a clean bill of health
  const blame = trust.chain && trust.chain.blame;
  const blamed = blame ? (typeof blame === "string" ? blame : blame.offender) : null;
  const bad = [trust.signature, trust.chain, trust.name, trust.look].some((c) => c && c.state === "bad");
  return h(
    "section",
    { class: "trust" + (bad ? " alarm" : ""), "aria-label": "Checks", role: bad ? "alert" : null },
    h(
      "ul",
      { class: "checks" },
      checkLine(trust.signature, "Sender"),
      checkLine(trust.chain, "Route"),
      checkLine(trust.name, "Name"),
      checkLine(trust.look, "Look"),
    ),
    trust.name && trust.name.accept
      ? h("button", { type: "button", class: "small", onclick: onAcceptName }, "I know this key changed: remember the new one")
      : null,
    hops.length
      ? h(
          "ol",
          { class: "hops", "aria-label": "Route" },
          hops.map((hop) =>
            h(
              "li",
              { class: "hop " + hop.status + (blamed && hop.server === blamed ? " blamed" : "") },
              h("span", { class: "server" }, safe(hop.server || "?")),
              " ",
              h("time", null, fullTime(hop.t)),
              " — ",
              visible(hop.text),
              hop.reason ? h("span", { class: "reason" }, " (", visible(hop.reason), ")") : null,
              blamed && hop.server === blamed ? h("strong", { class: "blamed-mark" }, " — blamed: its own seal proves it passed this message on in a form it should have refused") : null,
            ),
          ),
        )
      : null,
  );
}

/** The header and body of one message; `sent`: it is the sender's own record (its BCC
 * recipients are shown: nobody else sees this view of it). */
export function renderMessageBody(msg, plain, trustNode = null, sent = false) {
  const text = bodyText(msg, plain);
  const enc = isEncrypted(msg);
  let encLine = h("p", { class: "enc-line plain" }, "Not encrypted: servers on the way could read this message.");
  if (enc && text !== null) encLine = h("p", { class: "enc-line encrypted" }, h("span", { class: "lock", "aria-hidden": "true" }), " Encrypted end to end, decrypted in this browser. The subject, sender and recipients were not encrypted.");
  else if (enc) encLine = h("p", { class: "enc-line encrypted" }, h("span", { class: "lock", "aria-hidden": "true" }), " Encrypted end to end. ", visible(plain && plain.error ? plain.error : "It cannot be decrypted here."));
  const addresses = (list) => list.map((a, i) => [i ? ", " : "", h("code", { class: "addr" }, visible(a))]);
  const cc = Array.isArray(msg.cc) ? msg.cc : [];
  const bcc = sent ? bccOf(msg) : [];
  return h(
    "div",
    { class: "message" },
    h("h2", { class: "msg-subject" }, safe(msg.subject || "(no subject)")),
    h(
      "dl",
      { class: "headers" },
      h("dt", null, "From"),
      h("dd", null, msg._from_name ? [safe(msg._from_name), " "] : null, h("code", { class: "addr" }, visible(msg.from))),
      h("dt", null, "To"),
      h("dd", { class: "to" }, addresses([msg.to])),
      // Cc apart from To: who was written to and who was copied is part of the message
      cc.length ? [h("dt", null, "Cc"), h("dd", { class: "cc" }, addresses(cc))] : null,
      bcc.length ? [h("dt", null, "Bcc"), h("dd", { class: "bcc" }, addresses(bcc))] : null,
      h("dt", null, "Date"),
      h("dd", null, fullTime(msg.t)),
      msg._tags && msg._tags.length ? [h("dt", null, "Tags"), h("dd", { class: "tags" }, tagChips(msg._tags))] : null,
    ),
    trustNode,
    encLine,
    text === null ? null : h("div", { class: "content", tabindex: "0", "aria-label": "Message text" }, visibleText(text)),
  );
}
