// The two ways to talk to this server, behind one interface the views use.
//
// AccountApi: a password account (docs/API.md "Accounts"): `X-Flux-Session` on /mail/*
// and in the WebSocket's auth frame; the server composes, signs and (on request) encrypts
// with the key it holds.
// KeyApi: a key held in this browser: a session from the signed challenge (/auth/*), the
// key-session routes (/inbox/{address}, /thread, /changes, /ws...), and every envelope
// composed and signed here (js/flux), sent with POST /send. The key never leaves the
// browser: only signatures and signed envelopes do.
//
// Both answer the same calls; a message is named by {id, from} everywhere (API.md
// "Message identity"). Every refusal becomes an ApiError carrying the server's code and
// field, so a view can say which field is wrong.

export class ApiError extends Error {
  constructor(status, body) {
    const message = (body && body.error) || `the server answered ${status}`;
    super(message);
    this.status = status;
    this.code = (body && body.code) || "http_" + status;
    this.field = (body && body.field) || null;
    this.body = body || {};
  }
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? "?" + s : "";
}

const enc = encodeURIComponent;

/** One JSON request to this origin; the parsed answer, or throws ApiError. */
export async function call(method, path, { body, headers } = {}) {
  const init = { method, headers: { Accept: "application/json", ...(headers || {}) }, credentials: "omit", cache: "no-store", redirect: "error" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, { error: "the server could not be reached", code: "network" });
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok || !data || data.ok === false) throw new ApiError(response.status, data);
  return data;
}

const refsBody = (refs) => ({ ids: refs.map((r) => ({ id: r.id, from: r.from })) });

// -- recipients -----------------------------------------------------------------------------
const ADDRESS = /^fx1[0-9a-z]{20,80}$/;
const DOMAIN = /^[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?$|^\[[0-9a-fA-F:]+\](:[0-9]{1,5})?$/;
const NAME = /^[A-Za-z0-9._+-]{1,64}$/;

/** Parse what a person wrote: {written, address|null, domain|null, name|null}; throws. */
export function parseRecipient(text, field) {
  const value = text.trim();
  if (ADDRESS.test(value)) return { written: value, address: value, domain: null, name: null };
  const at = value.lastIndexOf("@");
  const local = at > 0 ? value.slice(0, at) : "";
  const domain = at > 0 ? value.slice(at + 1).toLowerCase() : "";
  if (!local || !DOMAIN.test(domain)) {
    throw new ApiError(400, { error: `“${value}” is not fx1…, fx1…@domain or name@domain`, code: "invalid_value", field });
  }
  if (ADDRESS.test(local)) return { written: value, address: local, domain, name: null };
  if (!NAME.test(local)) throw new ApiError(400, { error: `“${local}” is not a valid name`, code: "invalid_value", field });
  return { written: value, address: null, domain, name: local.toLowerCase() };
}

/** Split a comma/space separated field into recipients (empty: []). */
export function splitRecipients(text) {
  return String(text || "").split(/[\s,;]+/).filter(Boolean);
}

class BaseApi {
  constructor({ domain, address, name }) {
    this.domain = domain;
    this.address = address;
    this.name = name || null;
    this.keys = new Map(); // fx1 -> pub, learned from resolutions
  }

  authHeaders() {
    return {};
  }

  get(path, params) {
    return call("GET", path + query(params), { headers: this.authHeaders() });
  }

  post(path, body) {
    return call("POST", path, { body, headers: this.authHeaders() });
  }

  /**
   * Resolve one written recipient: {written, address, domain (null when this server's),
   * pub|null, confirmed}; `confirmed`: another domain answered for the address (it hosts
   * it). Names and addresses at this server are asked at /federation/resolve; at another
   * domain through this server's /web/resolve (the page may only talk to its own origin).
   * Throws ApiError naming `field`.
   */
  async resolve(written, field) {
    const r = parseRecipient(written, field);
    const here = !r.domain || r.domain === this.domain;
    let pub = null;
    let address = r.address;
    let confirmed = false;
    try {
      if (here) {
        const b = await call("GET", "/federation/resolve/" + enc(r.name || r.address));
        address = b.address;
        pub = b.pub;
      } else {
        const b = await this.get("/web/resolve/" + enc(`${r.name || r.address}@${r.domain}`));
        address = b.address;
        pub = b.pub;
        confirmed = true;
      }
    } catch (err) {
      // an fx1 address needs no lookup to be sent to; only its key stays unknown
      if (!r.address) throw new ApiError(err.status || 404, { error: `${written}: ${err.message}`, code: err.code, field });
    }
    if (r.address && address !== r.address) {
      throw new ApiError(400, { error: `${written}: the server answered for another address`, code: "address_mismatch", field });
    }
    if (pub) this.keys.set(address, pub);
    return { written, address, domain: here ? null : r.domain, pub: pub || this.keys.get(address) || null, confirmed: confirmed && !here };
  }
}

export class AccountApi extends BaseApi {
  constructor(session, account) {
    super({ domain: account.domain, address: account.address, name: account.name });
    this.kind = "account";
    this.session = session;
    this.account = account;
  }

  static async login(path, username, password) {
    const answer = await call("POST", path, { body: { username, password } });
    return new AccountApi(answer.session, answer);
  }

  authHeaders() {
    return { "X-Flux-Session": this.session };
  }

  /** The WebSocket's auth frame (API.md "WebSocket"): the account's session. */
  wsAuth() {
    return { action: "auth", session: this.session };
  }

  list(params) {
    return this.get("/mail/inbox", params);
  }
  inboxes() {
    return this.get("/mail/inboxes");
  }
  message(ref) {
    return this.get("/mail/message/" + enc(ref.id), { from: ref.from });
  }
  thread(ref) {
    return this.get("/mail/thread/" + enc(ref.id), { from: ref.from });
  }
  /** The text of `msg` (received, or sent: `_delivery`/`_folder`), decrypted by the
   * server with the account's key, which it holds (API.md "Accounts"): {content, ...}. */
  plain(msg) {
    const sent = msg._folder === "sent" || "_delivery" in msg;
    return sent ? this.get(`/mail/sent/${enc(msg.id)}/plain`) : this.get(`/mail/message/${enc(msg.id)}/plain`, { from: msg.from });
  }
  sent(params) {
    return this.get("/mail/sent", params);
  }
  sentOne(id) {
    return this.get("/mail/sent/" + enc(id));
  }
  changes(since) {
    return this.get("/mail/changes", { since });
  }
  read(refs) {
    return this.post("/mail/read", refsBody(refs));
  }
  unread(refs) {
    return this.post("/mail/unread", refsBody(refs));
  }
  remove(refs) {
    return this.post("/mail/delete", refsBody(refs));
  }
  tag(ref, add, remove) {
    return this.post("/mail/tag", { id: ref.id, from: ref.from, add, remove });
  }
  move(ref, inbox) {
    return this.post("/mail/move", { id: ref.id, from: ref.from, inbox });
  }

  /** Whether the server can encrypt for `recipients` (it knows keys only of those it hosts). */
  canEncryptFor(recipients) {
    return recipients.every((r) => !r.domain && r.pub);
  }

  /** Send through /mail/send: the server signs (and encrypts when asked). */
  async send(draft, recipients) {
    const written = (r) => (r.domain ? `${r.address}@${r.domain}` : r.address);
    const body = { to: written(recipients.to[0]), content: draft.content, encrypt: !!draft.encrypt };
    if (recipients.cc.length) body.cc = recipients.cc.map(written);
    if (recipients.bcc.length) body.bcc = recipients.bcc.map(written);
    if (draft.subject) body.subject = draft.subject;
    if (draft.re) body.re = draft.re;
    return this.post("/mail/send", body);
  }

  logout() {
    return this.post("/account/logout", {}).catch(() => null);
  }
}

export class KeyApi extends BaseApi {
  constructor(flux, signer, token, domain) {
    super({ domain, address: signer.address });
    this.kind = "key";
    this.flux = flux;
    this.signer = signer;
    this.token = token;
  }

  /** Open a session for `signer`: the signed challenge (API.md "Authentication"). */
  static async open(flux, signer) {
    const challenge = await call("GET", "/auth/challenge" + query({ address: signer.address }));
    const body = await flux.authSessionBody(signer, challenge.challenge, challenge.domain);
    const session = await call("POST", "/auth/session", { body });
    return new KeyApi(flux, signer, session.token, challenge.domain);
  }

  /** Register `signer`'s address here (POST /register); a no-op when already hosted. */
  static async register(flux, signer) {
    const info = await call("GET", "/health");
    const body = await flux.registerBody(signer, info.domain, Date.now());
    return call("POST", "/register", { body });
  }

  authHeaders() {
    return { Authorization: "Bearer " + this.token };
  }

  /** The WebSocket's auth frame: the key session's token. */
  wsAuth() {
    return { action: "auth", token: this.token };
  }

  list(params) {
    return this.get("/inbox/" + enc(this.address), params);
  }
  inboxes() {
    return this.get("/inboxes/" + enc(this.address));
  }
  message(ref) {
    return this.get(`/message/${enc(this.address)}/${enc(ref.id)}`, { from: ref.from });
  }
  thread(ref) {
    return this.get("/thread/" + enc(ref.id), { address: this.address, from: ref.from });
  }
  sent(params) {
    return this.get("/sent/" + enc(this.address), params);
  }
  sentOne(id) {
    return this.get(`/sent/${enc(this.address)}/${enc(id)}`);
  }
  changes(since) {
    return this.get("/changes", { address: this.address, since });
  }
  read(refs) {
    return this.post("/read", { address: this.address, ...refsBody(refs) });
  }
  unread(refs) {
    return this.post("/unread", { address: this.address, ...refsBody(refs) });
  }
  remove(refs) {
    return this.post("/delete", { address: this.address, ...refsBody(refs) });
  }
  tag(ref, add, remove) {
    return this.post("/tag", { address: this.address, id: ref.id, from: ref.from, add, remove });
  }
  move(ref, inbox) {
    return this.post("/move", { address: this.address, id: ref.id, from: ref.from, inbox });
  }

  canEncryptFor(recipients) {
    return recipients.every((r) => r.pub);
  }

  /**
   * Compose and sign here, then POST every copy (the primary and each BCC copy) to /send,
   * with `domains` naming recipients at other servers (API.md "Mail"). Answers
   * {id, recipients: {address: outcome}}.
   */
  async send(draft, recipients) {
    const all = [...recipients.to, ...recipients.cc, ...recipients.bcc];
    const readerPubs = {};
    if (draft.encrypt) for (const r of all) readerPubs[r.address] = r.pub;
    const envelopes = await this.flux.composeEnvelopes(
      this.signer,
      {
        to: recipients.to[0].address,
        cc: recipients.cc.map((r) => r.address),
        bcc: recipients.bcc.map((r) => r.address),
        subject: draft.subject || undefined,
        content: draft.content,
        re: draft.re || undefined,
        encrypt: !!draft.encrypt,
        readerPubs,
      },
      Date.now(),
    );
    const domains = {};
    for (const r of all) if (r.domain) domains[r.address] = r.domain;
    const outcome = {};
    let id = null;
    for (const envelope of envelopes) {
      const audience = envelope.bcc && envelope.bcc.length ? envelope.bcc : [envelope.to, ...(envelope.cc || [])];
      const where = {};
      for (const a of audience) if (domains[a]) where[a] = domains[a];
      const body = Object.keys(where).length ? { message: envelope, domains: where } : envelope;
      const answer = await call("POST", "/send", { body });
      id = id || answer.id;
      Object.assign(outcome, answer.recipients || {});
    }
    return { id, recipients: outcome, encrypted: !!draft.encrypt };
  }

  logout() {
    return this.post("/auth/logout", {}).catch(() => null);
  }
}
