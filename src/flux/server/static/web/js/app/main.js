// The FLUX web client: sign-in, mailboxes, list, reader, compose, live updates.
//
// State lives in one object (`app`) made at sign-in; views are re-rendered from it.
// The protocol module (../flux/index.js) is imported lazily: a page that cannot run it
// (no WebCrypto outside a secure context) still works with a password account, and says
// plainly why a key cannot be used here.

import { $, fill, fillKeeping, h, safe, visible } from "./dom.js";
import { AccountApi, ApiError, KeyApi, call, splitRecipients } from "./api.js";
import { Live } from "./live.js";
import { firstHopServer, learnHome, replyAllCc, standingGuesses } from "./homes.js";
import { ServerKeys, checkMessage, checkName } from "./trust.js";
import {
  bodyText, deliverySummary, isEncrypted, keyOf, renderBoxes, renderDelivery,
  renderMessageBody, renderRow, renderSentRow, renderTrust, senderLabel, shortAddress, unread,
} from "./views.js";

const PAGE = 50;
const SESSION_KEY = "flux.session.v1";

let flux = null; // the protocol module, once loaded
let fluxError = null;
let app = null; // the signed-in state

async function loadFlux() {
  if (flux || fluxError) return flux;
  if (!window.isSecureContext || !globalThis.crypto || !crypto.subtle) {
    fluxError = "This page is not a secure context (it needs HTTPS, or localhost), so the browser offers no cryptography: a key cannot be used here. A password account still works.";
    return null;
  }
  try {
    flux = await import("../flux/index.js");
  } catch (err) {
    fluxError = "The protocol module could not be loaded: " + (err.message || err);
  }
  return flux;
}

function toast(text) {
  const el = $("toast");
  el.textContent = text;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (el.textContent = ""), 6000);
}

function explain(err) {
  if (err instanceof ApiError) return err.field ? `${err.message} (${err.field})` : err.message;
  return String((err && err.message) || err);
}

// -- sign-in --------------------------------------------------------------------------------
async function showSignin() {
  $("app").hidden = true;
  $("signin").hidden = false;
  await loadFlux();
  const insecure = $("insecure");
  if (fluxError) {
    insecure.textContent = fluxError;
    insecure.hidden = false;
    $("key-generate").disabled = true;
    $("key-file").disabled = true;
    $("key-pass").disabled = true;
  }
  await listStoredKeys();
}

function keystore() {
  return flux ? flux.keystore || flux : null;
}

async function listStoredKeys() {
  const box = $("stored-keys");
  box.replaceChildren();
  const ks = keystore();
  if (!ks || !ks.loadSigners) return;
  let signers = [];
  try {
    signers = await ks.loadSigners();
  } catch (err) {
    box.append(h("p", { class: "error" }, "Keys in this browser cannot be read: " + explain(err)));
    return;
  }
  if (!signers.length) return;
  box.append(
    h("p", { class: "hint" }, "Keys kept in this browser:"),
    h(
      "ul",
      { class: "stored" },
      signers.map((signer) =>
        h(
          "li",
          null,
          h("button", { type: "button", class: "primary use-key", dataset: { address: signer.address }, onclick: () => signInWithSigner(signer, false) }, "Use ", h("code", null, shortAddress(signer.address))),
          " ",
          h("button", { type: "button", class: "small", onclick: async () => { if (confirm("Forget this key in this browser? Without a backup it is lost for good.")) { await ks.forgetSigner(signer.address); listStoredKeys(); } } }, "Forget"),
        ),
      ),
    ),
  );
}

function signinError(err) {
  $("signin-error").textContent = err ? explain(err) : "";
}

async function accountWay(path) {
  signinError(null);
  const username = $("acc-user").value.trim();
  const password = $("acc-pass").value;
  try {
    const api = await AccountApi.login(path, username, password);
    sessionStorage.setItem(SESSION_KEY, JSON.stringify({ kind: "account", session: api.session, account: api.account }));
    await start(api);
  } catch (err) {
    signinError(err);
  }
}

async function signInWithSigner(signer, register) {
  signinError(null);
  try {
    if (register) await KeyApi.register(flux, signer);
    const api = await KeyApi.open(flux, signer);
    sessionStorage.setItem(SESSION_KEY, JSON.stringify({ kind: "key", address: signer.address }));
    await start(api);
  } catch (err) {
    signinError(err);
  }
}

/** A download link for the key file of a new identity: sealed under the passphrase when
 * one was given (scrypt, as `flux keygen --passphrase`), plain otherwise (and said so). */
async function offerBackup(identity, passphrase) {
  const plain = flux.keyFileFor(identity);
  const text = passphrase ? await flux.sealKeyFile(plain, passphrase) : plain;
  const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
  const label = passphrase ? "Download a backup of your key (protected by your passphrase)" : "Download a backup of your key (unprotected: keep it safe)";
  const link = h("a", { href: url, download: `flux-key-${identity.address.slice(0, 12)}.json`, class: "button primary", id: "backup-link" }, label);
  toast("Your new key lives in this browser. Download a backup now: nobody can give it back if it is lost.");
  return link;
}

/** The protocol module, waiting for it if the page is still loading it. */
async function needFlux() {
  if (!(await loadFlux())) throw new Error(fluxError || "the protocol module is not available");
  return flux;
}

async function generateKey() {
  signinError(null);
  try {
    await needFlux();
    const passphrase = $("key-pass").value;
    if (passphrase && passphrase.length < 8) throw new Error("a passphrase needs at least 8 characters");
    const identity = await flux.generateIdentity();
    const signer = await flux.openSigner(identity.seed);
    await keystore().saveSigner(signer, { label: "created " + new Date().toISOString().slice(0, 10) });
    const backup = await offerBackup(identity, passphrase);
    $("key-pass").value = "";
    identity.seed = null; // the seed is in the backup file and the non-extractable key only
    await signInWithSigner(signer, true);
    $("me").after(backup);
  } catch (err) {
    signinError(err);
  }
}

async function importKey(file) {
  signinError(null);
  try {
    await needFlux();
    const text = await file.text();
    const passphrase = $("key-pass").value || undefined;
    let identity;
    try {
      identity = await flux.identityFromKeyFile(text, passphrase);
    } catch (err) {
      if (err.field === "passphrase" && !passphrase) {
        throw new Error("This key file is protected: write its passphrase above, then choose the file again.");
      }
      throw err;
    } finally {
      $("key-file").value = ""; // the same file may be chosen again
    }
    $("key-pass").value = "";
    const signer = await flux.openSigner(identity.seed);
    await keystore().saveSigner(signer, { label: file.name });
    await signInWithSigner(signer, true);
  } catch (err) {
    signinError(err);
  }
}

// -- the signed-in client -------------------------------------------------------------------
async function start(api) {
  await loadFlux(); // checks in the browser for every way in (a resumed session too)
  app = {
    api,
    keys: new ServerKeys(api),
    view: { kind: "box", inbox: "inbox" },
    loaded: new Map(), // key -> message (every message seen this session)
    order: [], // keys of the current list, in order
    cursor: null,
    selected: -1,
    open: null, // key of the message in the reader
    plain: new Map(), // key -> {text} | {error}
    trust: new Map(),
    boxes: {},
    tags: new Set(),
    search: "",
  };
  $("signin").hidden = true;
  $("app").hidden = false;
  // Bcc recipients an earlier version of this page kept here (the server's sent record now
  // holds them): nothing of them stays in the browser
  try {
    localStorage.removeItem("flux.sent-bcc.v1");
  } catch {
    /* storage disabled: nothing was kept */
  }
  const who = api.kind === "account" ? api.name : shortAddress(api.address);
  fill($("me"), h("span", { title: api.address }, visible(who)), " ", h("span", { class: "mode" }, api.kind === "account" ? "(password account)" : "(key in this browser)"));
  await Promise.all([refreshBoxes(), loadList()]);
  const handlers = {
    status: (text, up) => {
      const el = $("live");
      el.textContent = text;
      el.dataset.up = up ? "1" : "0";
    },
    message: (msg) => arrived(msg),
    changes: (c) => applyChanges(c),
    delivery: (frame) => deliveryChanged(frame),
    resync: () => reloadAll(),
    poll: () => poll(),
  };
  app.live = new Live(api, handlers); // the poll only while the socket cannot open
  app.live.start();
  // for tests and the benchmark: the state of the page, read-only
  window.fluxApp = {
    get state() { return app; },
    drop: () => app && app.live.drop(),
    pause: () => app && app.live.pause(),
    resume: () => app && app.live.resume(),
  };
}

async function refreshBoxes() {
  try {
    const answer = await app.api.inboxes();
    app.boxes = answer.inboxes || {};
  } catch (err) {
    toast(explain(err));
  }
  renderBoxList();
}

function unreadIn(counts) {
  return (counts && ((counts.pending || 0) + (counts.delivered || 0))) || 0;
}

function renderBoxList() {
  const v = app.view;
  const boxes = [{ key: "inbox", label: "Inbox", inbox: "inbox", count: unreadIn(app.boxes.inbox) }];
  boxes.push({ key: "sent", label: "Sent", sent: true, count: 0 });
  boxes.push({ key: "archive", label: "Archive", inbox: "archive", count: unreadIn(app.boxes.archive) });
  for (const name of Object.keys(app.boxes).sort()) {
    if (name === "inbox" || name === "archive") continue;
    boxes.push({ key: "box:" + name, label: name, inbox: name, count: unreadIn(app.boxes[name]) });
  }
  for (const tag of [...app.tags].sort()) boxes.push({ key: "tag:" + tag, label: tag, tag, count: 0 });
  for (const b of boxes) {
    b.current = (b.sent && v.kind === "sent") || (b.inbox && v.kind === "box" && v.inbox === b.inbox) || (b.tag && v.kind === "tag" && v.tag === b.tag);
  }
  fill($("boxes"), renderBoxes(boxes, pickBox));
}

function pickBox(b) {
  app.view = b.sent ? { kind: "sent" } : b.tag ? { kind: "tag", tag: b.tag } : { kind: "box", inbox: b.inbox };
  app.open = null;
  // at 360 px the reader takes the list's place while `reading`: another mailbox shows its
  // list (left set, the page would show an empty reader and nothing else)
  $("app").classList.remove("reading");
  $("boxes").classList.remove("shown");
  fill($("reader"));
  renderBoxList();
  loadList();
}

function listParams() {
  const v = app.view;
  if (v.kind === "tag") return { tag: v.tag, limit: PAGE };
  return { inbox: v.inbox, limit: PAGE };
}

async function loadList(more = false) {
  const v = app.view;
  if (more && (app.loadingMore || !app.cursor)) return; // one next page at a time
  app.loadingMore = more;
  const title = v.kind === "sent" ? "Sent" : v.kind === "tag" ? "#" + v.tag : v.inbox === "inbox" ? "Inbox" : v.inbox;
  fill($("list-title"), safe(title));
  try {
    const params = v.kind === "sent" ? { limit: PAGE } : listParams();
    if (more && app.cursor) params.cursor = app.cursor;
    const answer = v.kind === "sent" ? await app.api.sent(params) : await app.api.list(params);
    if (app.view !== v) return;
    if (!more) app.order = [];
    for (const msg of answer.messages || []) remember(msg, v.kind === "sent");
    app.order.push(...(answer.messages || []).map(keyOf).filter((k) => !app.order.includes(k)));
    app.cursor = answer.next_cursor || null;
    // the tags of the mail just loaded are mailboxes in the list too: drawn now, not only
    // when the next count refresh happens to come after this page (at sign-in they race)
    renderBoxList();
  } catch (err) {
    toast(explain(err));
  } finally {
    app.loadingMore = false;
  }
  renderList();
  decryptVisible();
}

function remember(msg, sent = false) {
  const key = keyOf(msg) + (sent ? "|sent" : "");
  const old = app.loaded.get(key);
  app.loaded.set(key, old ? { ...old, ...msg } : msg);
  for (const t of msg._tags || []) app.tags.add(t);
  return key;
}

function listed(key) {
  return app.loaded.get(app.view.kind === "sent" ? key + "|sent" : key);
}

function matches(msg) {
  const q = app.search.trim().toLowerCase();
  if (!q) return true;
  const plain = app.plain.get(keyOf(msg));
  const hay = [msg.from, msg._from_name, msg.subject, bodyText(msg, plain), msg.to, ...(msg.cc || []), ...(msg._tags || [])].join("\n").toLowerCase();
  return hay.includes(q);
}

function visibleKeys() {
  return app.order.filter((k) => {
    const m = listed(k);
    return m && m._status !== "deleted" && matches(m);
  });
}

function renderList() {
  const keys = visibleKeys();
  app.visible = keys;
  if (app.selected >= keys.length) app.selected = keys.length - 1;
  const sent = app.view.kind === "sent";
  const rows = keys.map((k, i) => {
    const msg = listed(k);
    const sel = i === app.selected || k === app.open;
    return sent ? renderSentRow(msg, app.plain.get(k), sel, openMessage) : renderRow(msg, app.plain.get(k), sel, openMessage);
  });
  const list = $("list");
  fill(list, rows.length ? rows : h("li", { class: "empty", role: "option", "aria-selected": "false" }, app.search ? "Nothing in the loaded mail matches." : "No messages."));
  $("more").hidden = !app.cursor;
  const current = list.querySelector(".selected");
  if (current) list.setAttribute("aria-activedescendant", current.id || "");
}

/** A password account's encrypted message as its server decrypts it for this session
 * (the server holds the account's key; a key in the browser never leaves it). */
async function accountPlain(msg) {
  try {
    return { text: (await app.api.plain(msg)).content };
  } catch (err) {
    return { error: "It could not be decrypted: " + explain(err) };
  }
}

async function decryptVisible() {
  if (app.api.kind === "account") {
    let changed = false;
    for (const k of app.order) {
      const msg = listed(k);
      if (!msg || !isEncrypted(msg) || app.plain.has(k)) continue;
      app.plain.set(k, await accountPlain(msg));
      changed = true;
    }
    if (changed) {
      renderList();
      if (app.open) renderReader();
    }
    return;
  }
  if (!flux) return;
  for (const k of app.order) {
    const msg = listed(k);
    if (!msg || !isEncrypted(msg) || app.plain.has(k)) continue;
    try {
      app.plain.set(k, { text: await flux.decryptContent(app.api.signer, msg) });
    } catch (err) {
      app.plain.set(k, { error: err.code === "not_a_recipient" ? "This key is not among its readers." : "It could not be decrypted: " + explain(err) });
    }
  }
  renderList();
  if (app.open) renderReader();
}

// -- reading --------------------------------------------------------------------------------
async function openMessage(msg) {
  const k = keyOf(msg);
  app.open = k;
  app.selected = (app.visible || []).indexOf(k);
  renderList();
  $("app").classList.add("reading");
  renderReader();
  if (app.view.kind !== "sent" && unread(msg)) {
    try {
      await app.api.read([{ id: msg.id, from: msg.from }]);
      setStatus(k, "read");
      refreshBoxes();
    } catch (err) {
      toast(explain(err));
    }
  }
  if (!app.trust.has(k) && app.view.kind !== "sent") {
    await trustOf(msg);
    if (app.open === k) renderReader();
  }
  if (app.view.kind !== "sent") loadThread(msg);
}

/** The checks of `msg` (trust.js checkMessage), made once: a reply waits for them too, as
 * where it goes depends on whether the route verified (`writtenFor`). */
function trustOf(msg) {
  const k = keyOf(msg);
  if (app.trust.has(k)) return Promise.resolve(app.trust.get(k));
  app.checking = app.checking || new Map();
  if (!app.checking.has(k)) {
    const check = checkMessage(flux, app.keys, msg).then((trust) => {
      app.trust.set(k, trust);
      return trust;
    });
    check.finally(() => app.checking.delete(k)).catch(() => {});
    app.checking.set(k, check);
  }
  return app.checking.get(k);
}

/** Whether the first hop of `msg` may say where its sender lives: not when its route
 * check failed (a relay that rewrote that record would choose where replies go). */
function firstHopUsable(msg) {
  return app.trust.get(keyOf(msg))?.chain?.state !== "bad";
}

function setStatus(k, status) {
  const msg = app.loaded.get(k);
  if (msg) app.loaded.set(k, { ...msg, _status: status });
  renderList();
  if (app.open === k) renderReader();
}

async function loadThread(msg) {
  const k = keyOf(msg);
  try {
    const answer = await app.api.thread({ id: msg.id, from: msg.from });
    const messages = await withOwnMessages(answer.messages || []);
    if (app.api.kind === "account") {
      for (const m of messages) {
        const mk = keyOf(m);
        if (isEncrypted(m) && !app.plain.has(mk)) app.plain.set(mk, await accountPlain(m));
      }
    }
    if (flux && app.api.kind === "key") {
      for (const m of messages) {
        const mk = keyOf(m);
        if (isEncrypted(m) && !app.plain.has(mk)) {
          try {
            app.plain.set(mk, { text: await flux.decryptContent(app.api.signer, m) });
          } catch (err) {
            app.plain.set(mk, { error: explain(err) });
          }
        }
      }
    }
    app.threads = app.threads || new Map();
    app.threads.set(k, messages);
  } catch (err) {
    // the account routes may not offer /mail/thread: build it from loaded mail by `re`
    app.threads = app.threads || new Map();
    app.threads.set(k, localThread(msg));
  }
  if (app.open === k) renderReader();
}

/** The thread is read from the mailbox, which does not hold what we sent ourselves: the
 * messages it answers (`re`) that we sent are added from sent mail (at most 20 steps). */
async function withOwnMessages(messages) {
  const byId = new Map(messages.map((m) => [m.id, m]));
  for (let step = 0; step < 20; step++) {
    const missing = [...byId.values()].map((m) => m.re).filter((re) => re && !byId.has(re));
    if (!missing.length) break;
    let found = false;
    for (const re of new Set(missing)) {
      try {
        const answer = await app.api.sentOne(re);
        if (answer.message) {
          byId.set(re, answer.message);
          remember(answer.message, true);
          found = true;
        }
      } catch {
        byId.set(re, null); // not ours: the mailbox's thread is all there is
      }
    }
    if (!found) break;
  }
  return [...byId.values()].filter(Boolean).sort((a, b) => a.t - b.t);
}

function localThread(msg) {
  const all = [...app.loaded.values()];
  const byId = new Map(all.map((m) => [m.id, m]));
  let root = msg;
  const seen = new Set();
  while (root.re && byId.has(root.re) && !seen.has(root.re)) {
    seen.add(root.re);
    root = byId.get(root.re);
  }
  const ids = new Set([root.id]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const m of all) if (m.re && ids.has(m.re) && !ids.has(m.id)) { ids.add(m.id); grew = true; }
  }
  const unique = new Map();
  for (const m of all) if (ids.has(m.id)) unique.set(keyOf(m), m);
  return [...unique.values()].sort((a, b) => a.t - b.t);
}

function actionButton(label, key, handler, extra) {
  return h("button", { type: "button", class: "action", dataset: { action: key }, "aria-keyshortcuts": extra || null, onclick: handler }, label);
}

function renderReader() {
  const reader = $("reader");
  const k = app.open;
  if (!k) return fill(reader);
  const sent = app.view.kind === "sent";
  const msg = sent ? app.loaded.get(k + "|sent") : app.loaded.get(k);
  if (!msg) return fill(reader);
  const plain = app.plain.get(k);
  const actions = sent
    ? [actionButton("Forward", "forward", () => composeFrom(msg, "forward"), "f")]
    : [
        actionButton("Reply", "reply", () => composeFrom(msg, "reply"), "r"),
        actionButton("Reply all", "reply-all", () => composeFrom(msg, "all"), "a"),
        actionButton("Forward", "forward", () => composeFrom(msg, "forward"), "f"),
        actionButton("Archive", "archive", () => moveOpen("archive"), "e"),
        actionButton("Mark unread", "unread", () => markUnread(), "u"),
        actionButton("Delete", "delete", () => deleteOpen(), "#"),
      ];
  const thread = (!sent && app.threads && app.threads.get(k)) || [];
  const others = thread.filter((m) => keyOf(m) !== k);
  // The reader is drawn again whenever the open message may have changed (its checks come
  // in, its conversation loads, mail arrives): its forms stay on the page across redraws,
  // with what is typed in them and the focus (else the next keys go to the shortcuts)
  const forms = sent ? null : formsFor(k);
  fillKeeping(
    reader,
    forms,
    h("button", { type: "button", class: "back", onclick: () => { $("app").classList.remove("reading"); $("list").focus(); } }, "← Back"),
    h("div", { class: "actions", role: "toolbar", "aria-label": "Message actions" }, actions),
    forms,
    renderMessageBody(msg, plain, sent ? null : renderTrust(app.trust.get(k), () => { app.trust.get(k).name.accept(); app.trust.delete(k); app.checking?.delete(k); openMessage(msg); }), sent),
    sent ? renderDelivery(msg._delivery, msg) : null,
    others.length
      ? h(
          "section",
          { class: "thread", "aria-label": "Conversation" },
          h("h3", null, `Conversation (${thread.length} messages)`),
          h(
            "ol",
            null,
            thread.map((m) => {
              const t = bodyText(m, app.plain.get(keyOf(m)));
              return h(
                "li",
                { class: "thread-item" + (keyOf(m) === k ? " this" : ""), dataset: { key: keyOf(m) } },
                h("div", { class: "thread-head" }, safe(senderLabel(m)), " · ", safe(m.subject || "(no subject)"), " · ", new Date(m.t).toLocaleString()),
                h("div", { class: "thread-text" }, t === null ? "Encrypted" : visible(t.slice(0, 500))),
              );
            }),
          ),
        )
      : null,
  );
}

const refOf = (msg) => ({ id: msg.id, from: msg.from });

function openMsg() {
  return app.open && app.view.kind !== "sent" ? app.loaded.get(app.open) : null;
}

async function moveOpen(inbox) {
  const msg = openMsg();
  if (!msg) return;
  try {
    await app.api.move(refOf(msg), inbox);
    app.loaded.set(keyOf(msg), { ...msg, _inbox: inbox });
    if (app.view.kind === "box" && app.view.inbox !== inbox) app.order = app.order.filter((x) => x !== keyOf(msg));
    toast(`Moved to ${inbox}.`);
    closeReader();
    refreshBoxes();
  } catch (err) {
    toast(explain(err));
  }
}

/** The reader's forms for the message `k`: those on the page when they were made for it
 * (their mailbox names brought up to date), else new ones. */
function formsFor(k) {
  const old = $("reader").querySelector(":scope > .edit-forms");
  if (old && old.dataset.key === k) {
    fill($("box-names"), boxNameOptions());
    return old;
  }
  return editForms(k);
}

function boxNameOptions() {
  return ["inbox", "archive", ...Object.keys(app.boxes)].filter((v, i, a) => a.indexOf(v) === i).map((n) => h("option", { value: n }));
}

function editForms(k) {
  const tagInput = h("input", { id: "tag-input", autocomplete: "off", spellcheck: "false", placeholder: "tag, or -tag to remove" });
  const moveInput = h("input", { id: "move-input", autocomplete: "off", spellcheck: "false", placeholder: "mailbox name", list: "box-names" });
  const names = h("datalist", { id: "box-names" }, boxNameOptions());
  return h(
    "div",
    { class: "edit-forms", dataset: { key: k } },
    h("form", { class: "inline", id: "tag-form", onsubmit: (e) => { e.preventDefault(); tagWith(tagInput.value); } },
      h("label", { for: "tag-input" }, "Tags"), tagInput, h("button", { type: "submit" }, "Apply")),
    h("form", { class: "inline", id: "move-form", onsubmit: (e) => { e.preventDefault(); if (moveInput.value.trim()) moveOpen(moveInput.value.trim()); } },
      h("label", { for: "move-input" }, "Move to"), moveInput, names, h("button", { type: "submit" }, "Move")),
  );
}

async function tagWith(input) {
  const msg = openMsg();
  if (!msg || !input.trim()) return;
  const add = [];
  const remove = [];
  for (const word of input.split(/[\s,]+/).filter(Boolean)) (word.startsWith("-") ? remove : add).push(word.replace(/^[-#]+/, "").toLowerCase());
  try {
    const answer = await app.api.tag(refOf(msg), add.filter(Boolean), remove.filter(Boolean));
    app.loaded.set(keyOf(msg), { ...msg, _tags: answer.tags });
    for (const t of answer.tags || []) app.tags.add(t);
    // applied: the field is emptied (the redraw keeps it as it is), unless typed on since
    const field = $("tag-input");
    if (field && field.value === input) field.value = "";
    renderBoxList();
    renderList();
    renderReader();
    toast("Tags: " + ((answer.tags || []).join(", ") || "none"));
  } catch (err) {
    toast(explain(err));
  }
}

async function markUnread() {
  const msg = openMsg();
  if (!msg) return;
  try {
    await app.api.unread([refOf(msg)]);
    setStatus(keyOf(msg), "delivered");
    toast("Marked unread.");
    closeReader();
    refreshBoxes();
  } catch (err) {
    toast(explain(err));
  }
}

async function deleteOpen() {
  const msg = openMsg();
  if (!msg) return;
  try {
    await app.api.remove([refOf(msg)]);
    app.loaded.set(keyOf(msg), { ...msg, _status: "deleted" });
    toast("Deleted.");
    closeReader();
    refreshBoxes();
  } catch (err) {
    toast(explain(err));
  }
}

function closeReader() {
  app.open = null;
  $("app").classList.remove("reading");
  fill($("reader"));
  renderList();
}

// -- live -----------------------------------------------------------------------------------
function belongsHere(msg) {
  const v = app.view;
  if (v.kind === "box") return (msg._inbox || "inbox") === v.inbox;
  if (v.kind === "tag") return (msg._tags || []).includes(v.tag);
  return false;
}

function arrived(msg) {
  const k = remember(msg);
  if (belongsHere(msg) && !app.order.includes(k)) app.order.unshift(k);
  renderList();
  refreshBoxes();
  decryptVisible();
  const name = msg._from_name || shortAddress(msg.from);
  toast(`New message from ${visible(name)}`);
}

function applyChanges(c) {
  for (const msg of [...(c.created || []), ...(c.updated || [])]) {
    const k = remember(msg);
    const here = belongsHere(msg);
    if (here && !app.order.includes(k)) app.order.unshift(k);
    if (!here && app.view.kind === "box") app.order = app.order.filter((x) => x !== k);
  }
  for (const msg of c.sent || []) remember(msg, true);
  if (c.created?.length || c.updated?.length || c.sent?.length) {
    app.order.sort((a, b) => (listed(b)?.t || 0) - (listed(a)?.t || 0));
    renderList();
    refreshBoxes();
    if (app.open) renderReader();
    decryptVisible();
  }
}

function deliveryChanged(frame) {
  for (const [key, msg] of app.loaded) {
    if (key.endsWith("|sent") && msg.id === frame.id) {
      app.loaded.set(key, { ...msg, _delivery: { ...(msg._delivery || {}), ...(frame.delivery || {}) } });
    }
  }
  if (app.view.kind === "sent") {
    renderList();
    if (app.open) renderReader();
  }
}

async function poll() {
  const v = app.view;
  const answer = v.kind === "sent" ? await app.api.sent({ limit: PAGE }) : await app.api.list(listParams());
  if (app.view !== v) return;
  const fresh = [];
  for (const msg of answer.messages || []) {
    const k = keyOf(msg);
    const before = app.loaded.get(v.kind === "sent" ? k + "|sent" : k);
    remember(msg, v.kind === "sent");
    if (!app.order.includes(k)) fresh.push(k);
    else if (before && JSON.stringify(before._delivery) !== JSON.stringify(msg._delivery) && app.open === k) renderReader();
  }
  if (fresh.length) app.order.unshift(...fresh);
  // what moved away or was deleted elsewhere leaves the first page
  const firstPage = new Set((answer.messages || []).map(keyOf));
  const newest = answer.messages && answer.messages.length ? answer.messages[answer.messages.length - 1].t : 0;
  app.order = app.order.filter((k) => firstPage.has(k) || (listed(k)?.t || 0) < newest);
  renderList();
  if (app.open && v.kind === "sent") renderReader();
  await refreshBoxes();
  decryptVisible();
}

async function reloadAll() {
  app.loaded.clear();
  await Promise.all([refreshBoxes(), loadList()]);
}

// -- compose --------------------------------------------------------------------------------
const draftState = { resolved: null, timer: null, guesses: [] };

/** Where a reply to `msg` goes: {to, note}. The sender at its server: the first hop's
 * server, when it is not ours and the route verified (the other recipients of a reply-all
 * are placed by homes.js `replyAllCc`). A route that does not verify gives no home: the
 * address goes bare, for this server to route, with a note saying why. */
function writtenFor(msg) {
  if (msg._from_name) return { to: msg._from_name, note: null };
  const server = firstHopServer(msg);
  if (!server || server === app.api.domain) return { to: msg.from, note: null };
  if (firstHopUsable(msg)) return { to: `${msg.from}@${server}`, note: null };
  const text = `The route of the message you answer does not verify, so its first server (${server}) is not taken as the sender's home: ${shortAddress(msg.from)} is written bare, for this server to route. Add @server if you know it.`;
  return { to: msg.from, note: { address: msg.from, server: null, text } };
}

function quote(text) {
  return String(text || "").split("\n").map((l) => "> " + l).join("\n");
}

async function composeFrom(msg, how) {
  if (draftState.finding || $("compose").open) return; // one draft at a time
  const plain = app.plain.get(keyOf(msg));
  const text = bodyText(msg, plain) ?? "(encrypted)";
  const subject = msg.subject || "";
  if (how === "forward") {
    openCompose({ subject: /^fwd:/i.test(subject) ? subject : "Fwd: " + subject, content: `\n\n---------- Forwarded message ----------\nFrom: ${msg._from_name || msg.from}\nDate: ${new Date(msg.t).toISOString()}\nSubject: ${subject}\n\n${text}` });
    return;
  }
  let to, note;
  let cc = { cc: [], guesses: [] };
  draftState.finding = true; // the draft opens once these are known: one at a time
  try {
    if (app.view.kind !== "sent") await trustOf(msg); // where the reply goes depends on it
    ({ to, note } = writtenFor(msg));
    if (how === "all") {
      // each other recipient's home may cost a lookup
      toast("Finding where each recipient is hosted…");
      cc = await replyAllCc(app.api, msg, [...app.loaded.values()], firstHopUsable);
      toast("");
    }
  } finally {
    draftState.finding = false;
  }
  openCompose({ to, cc: cc.cc.join(", "), guesses: note ? [note, ...cc.guesses] : cc.guesses, subject: /^re:/i.test(subject) ? subject : "Re: " + subject, content: `\n\n${quote(text)}`, re: msg.id });
}

/** The notes under Cc: one per recipient whose home server was guessed and still stands
 * as guessed in the fields (a corrected one loses its note). */
function renderGuesses() {
  draftState.guesses = standingGuesses(draftState.guesses, fieldsNow());
  fill($("c-notes"), draftState.guesses.map((g) => h("li", { class: "note", dataset: { address: g.address } }, g.text)));
}

function openCompose(fields = {}) {
  $("c-to").value = fields.to || "";
  $("c-cc").value = fields.cc || "";
  $("c-bcc").value = "";
  $("c-subject").value = fields.subject || "";
  $("c-body").value = fields.content || "";
  $("c-re").value = fields.re || "";
  $("compose-error").textContent = "";
  $("compose-title").textContent = fields.re ? "Reply" : fields.subject && fields.subject.startsWith("Fwd:") ? "Forward" : "New message";
  draftState.userChoice = null;
  draftState.guesses = fields.guesses || [];
  renderGuesses();
  $("compose").showModal();
  (fields.to ? $("c-body") : $("c-to")).focus();
  if (fields.to) $("c-body").setSelectionRange(0, 0);
  recipientsChanged();
}

const fieldsNow = () => ["c-to", "c-cc", "c-bcc"].map((id) => $(id).value).join("\n");

/** The recipients as resolved for the fields as they are now (reused from the last check
 * when nothing changed since: a name at another domain costs a lookup there). */
async function resolvedNow() {
  if (draftState.resolved && draftState.resolvedFor === fieldsNow()) return draftState.resolved;
  return resolveAll();
}

async function resolveAll() {
  const api = app.api;
  const out = { to: [], cc: [], bcc: [] };
  for (const field of ["to", "cc", "bcc"]) {
    const list = splitRecipients($("c-" + field).value);
    if (field === "to" && list.length !== 1) {
      throw new ApiError(400, { error: list.length ? "write one address in To (others in Cc)" : "To is required", code: "invalid_value", field: "to" });
    }
    for (const written of list) out[field].push(await api.resolve(written, field));
  }
  return out;
}

function recipientsChanged() {
  renderGuesses();
  clearTimeout(draftState.timer);
  draftState.timer = setTimeout(checkEncryption, 250);
}

async function checkEncryption() {
  const state = $("c-enc-state");
  const box = $("c-encrypt");
  let resolved;
  const asked = fieldsNow();
  try {
    resolved = await resolveAll();
  } catch (err) {
    draftState.resolved = null;
    box.checked = false;
    box.disabled = true;
    state.textContent = $("c-to").value.trim() ? "Not encrypted yet: " + explain(err) : "Encryption needs every recipient's key.";
    return;
  }
  draftState.resolved = resolved;
  draftState.resolvedFor = asked;
  const all = [...resolved.to, ...resolved.cc, ...resolved.bcc];
  const possible = app.api.canEncryptFor(all);
  const unknown = all.filter((r) => !r.pub).map((r) => r.written);
  box.disabled = !possible;
  if (app.api.kind === "key") {
    box.checked = possible && draftState.userChoice !== false;
    state.textContent = possible
      ? box.checked
        ? `Encrypted end to end for ${all.length} recipient${all.length === 1 ? "" : "s"} (and you). The subject and the list of recipients are not encrypted.`
        : "Not encrypted: you turned encryption off."
      : `Not encrypted: no key known for ${unknown.join(", ") || "a recipient"}.`;
  } else {
    // the server encrypts for an account, and only for addresses it hosts (it holds the
    // account's key, and decrypts the account's mail for it: /mail/message/{id}/plain)
    box.checked = possible && draftState.userChoice !== false;
    state.textContent = !possible
      ? "Not encrypted: this server can encrypt only for addresses it hosts."
      : box.checked
        ? `Encrypted end to end by this server with your account's key, for ${all.length} recipient${all.length === 1 ? "" : "s"} (and you). The subject and the list of recipients are not encrypted.`
        : "Not encrypted: you turned encryption off.";
  }
}

async function sendDraft(event) {
  event.preventDefault();
  const err = $("compose-error");
  err.textContent = "";
  $("c-send").disabled = true;
  try {
    const recipients = await resolvedNow();
    const draft = { subject: $("c-subject").value, content: $("c-body").value, re: $("c-re").value || null, encrypt: $("c-encrypt").checked && !$("c-encrypt").disabled };
    const answer = await app.api.send(draft, recipients);
    // a recipient written at a server that confirmed it hosts the address: its home, for
    // the next reply-all (homes.js)
    for (const r of [...recipients.to, ...recipients.cc, ...recipients.bcc]) if (r.confirmed) learnHome(r.address, r.domain);
    $("compose").close();
    const outcomes = Object.values(answer.recipients || {});
    toast(`Sent${draft.encrypt ? " encrypted" : ""}: ${outcomes.join(", ") || "ok"}.`);
    if (app.view.kind === "sent") loadList();
  } catch (e) {
    err.textContent = explain(e);
  } finally {
    $("c-send").disabled = false;
  }
}

// -- keyboard ---------------------------------------------------------------------------------
function move(delta) {
  const keys = app.visible || [];
  if (!keys.length) return;
  app.selected = Math.max(0, Math.min(keys.length - 1, app.selected + delta));
  renderList();
  const row = $("list").children[app.selected];
  if (row) row.scrollIntoView({ block: "nearest" });
}

function openSelected() {
  const k = (app.visible || [])[app.selected];
  const msg = k && listed(k);
  if (msg) openMessage(msg);
}

function onKey(event) {
  if (!app || $("app").hidden || event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  // typing goes to the field, and an open dialog keeps its keys; a closed dialog does not
  // (Chromium may leave focus on one of its elements after Esc)
  if (target.closest && target.closest("input, textarea, select, dialog[open]")) {
    if (event.key === "Escape" && target.id === "search") target.blur();
    return;
  }
  const msg = openMsg();
  const keys = {
    j: () => move(1),
    k: () => move(-1),
    o: openSelected,
    Enter: () => target.tagName !== "BUTTON" && openSelected(),
    c: () => openCompose(),
    r: () => msg && composeFrom(msg, "reply"),
    a: () => msg && composeFrom(msg, "all"),
    f: () => msg && composeFrom(msg, "forward"),
    e: () => msg && moveOpen("archive"),
    "#": () => msg && deleteOpen(),
    t: () => msg && $("tag-input") && $("tag-input").focus(),
    u: () => msg && markUnread(),
    "/": () => $("search").focus(),
    "?": () => $("help").showModal(),
  };
  const action = keys[event.key];
  if (action) {
    event.preventDefault();
    action();
  }
}

// -- boot -------------------------------------------------------------------------------------
function wire() {
  $("account-form").addEventListener("submit", (e) => {
    e.preventDefault();
    accountWay("/account/login");
  });
  $("acc-register").addEventListener("click", () => {
    if ($("account-form").reportValidity()) accountWay("/account/register");
  });
  $("key-generate").addEventListener("click", generateKey);
  $("key-file").addEventListener("change", (e) => e.target.files[0] && importKey(e.target.files[0]));
  $("compose-open").addEventListener("click", () => openCompose());
  $("compose-form").addEventListener("submit", sendDraft);
  $("c-cancel").addEventListener("click", () => $("compose").close());
  $("c-encrypt").addEventListener("change", (e) => {
    draftState.userChoice = e.target.checked;
    checkEncryption();
  });
  for (const id of ["c-to", "c-cc", "c-bcc"]) $(id).addEventListener("input", recipientsChanged);
  $("help-open").addEventListener("click", () => $("help").showModal());
  $("more").addEventListener("click", () => loadList(true));
  // the next page loads by itself as the list is scrolled to its end (pages of 50: a
  // mailbox of any size opens as fast as a small one)
  new IntersectionObserver((seen) => {
    if (app && seen.some((e) => e.isIntersecting)) loadList(true);
  }, { root: $("list-pane"), rootMargin: "200px" }).observe($("more"));
  // `search` too: Esc empties a search box without an `input` event
  for (const kind of ["input", "search"]) {
    $("search").addEventListener(kind, (e) => {
      if (!app || app.search === e.target.value) return;
      app.search = e.target.value;
      renderList();
    });
  }
  // a closed dialog hands the keyboard back to the list, where the shortcuts work, unless
  // it went elsewhere already (the event comes a moment after the dialog closed: a key
  // pressed in that moment, "/" say, may have moved it on purpose)
  for (const id of ["compose", "help"]) {
    $(id).addEventListener("close", () => {
      const at = document.activeElement;
      if (!at || at === document.body || $(id).contains(at)) $("list").focus();
    });
  }
  $("menu").addEventListener("click", () => {
    const shown = $("boxes").classList.toggle("shown");
    $("menu").setAttribute("aria-expanded", shown ? "true" : "false");
  });
  $("signout").addEventListener("click", async () => {
    if (app) {
      app.live.stop();
      await app.api.logout();
    }
    sessionStorage.removeItem(SESSION_KEY);
    app = null;
    location.reload();
  });
  $("list").addEventListener("keydown", (e) => {
    if (e.key === "ArrowDown") { e.preventDefault(); move(1); }
    if (e.key === "ArrowUp") { e.preventDefault(); move(-1); }
  });
  document.addEventListener("keydown", onKey);
}

async function resume() {
  let saved = null;
  try {
    saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
  } catch {
    saved = null;
  }
  if (!saved) return false;
  try {
    if (saved.kind === "account") {
      const me = await call("GET", "/account/me", { headers: { "X-Flux-Session": saved.session } });
      await start(new AccountApi(saved.session, { ...saved.account, ...me }));
      return true;
    }
    if (saved.kind === "key" && (await loadFlux())) {
      const signers = await keystore().loadSigners();
      const signer = signers.find((s) => s.address === saved.address);
      if (signer) {
        await start(await KeyApi.open(flux, signer));
        return true;
      }
    }
  } catch {
    sessionStorage.removeItem(SESSION_KEY);
  }
  return false;
}

wire();
if (!(await resume())) await showSignin();
document.documentElement.dataset.ready = "1";
