// Live updates, the same for both ways in.
//
// The WebSocket /ws (API.md "WebSocket"), authenticated with the api's own credential
// (`api.wsAuth()`: a key session's token, or a password account's X-Flux-Session). New
// mail arrives as `message` frames; `changed` and `delivery` frames say something changed
// elsewhere. After any reconnect (and after `changed`), the client asks for the changes
// since the last state (`api.changes`: /changes, or /mail/changes for an account) and gets
// every message created or changed meanwhile, each once in its current state, so nothing
// pushed while the socket was down is missed. A `since` the server cannot answer
// (cannot_calculate_changes) means: reload everything. Reconnects back off (capped,
// jittered) and start afresh only after the socket stayed up for a while, as FluxClient.
// The browser answers the server's pings itself; that pong is the acknowledgement that
// marks pushed mail delivered.
//
// A session the server ends (logout elsewhere, a password change, an operator who
// disabled the account, expiry) gets an `auth` error frame and a 4401/4403 close: the page
// says so and stops reconnecting, since the same credential would be refused again.
//
// Fallback: when the socket cannot open at all (FAILS_BEFORE_POLL attempts in a row end
// before `authed`, e.g. a proxy that refuses WebSockets), the page asks its mailbox again
// every few seconds (Poll) while it keeps trying the socket; the first `authed` stops it.

const STABLE_MS = 30_000;
const CAP_MS = 30_000;
const FAILS_BEFORE_POLL = 3;
/** close codes meaning "this credential is refused": reconnecting would not help */
const SIGNED_OUT = new Set([4401, 4403]);

export class Live {
  constructor(api, handlers) {
    this.api = api;
    this.h = handlers; // {message(msg), changes({created, updated, sent}), delivery(frame), resync(), status(text, up), poll()}
    this.state = null;
    this.attempt = 0;
    this.failed = 0; // attempts in a row that ended before `authed`
    this.closed = false;
    this.ended = false; // the server ended the session
    this.catching = null;
    this.again = false;
    this.fallback = null;
    this.frames = 0; // frames received (for tests: live updates came over the socket)
  }

  start() {
    this.connect();
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws`;
  }

  connect() {
    if (this.closed || this.paused || this.ended) return;
    if (!this.fallback) this.h.status("connecting…", false);
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this.retry(0);
      return;
    }
    this.ws = ws;
    let upSince = 0;
    ws.onopen = () => ws.send(JSON.stringify({ ...this.api.wsAuth(), dialect: "flux" }));
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this.frames += 1;
      if (frame.action === "authed") upSince = Date.now();
      this.frame(frame);
    };
    ws.onclose = (event) => {
      if (this.ws === ws) this.ws = null;
      if (this.closed || this.paused) return;
      if (SIGNED_OUT.has(event.code)) this.signedOut();
      if (this.ended) return;
      this.retry(upSince);
    };
  }

  /** Try again after a backoff; after FAILS_BEFORE_POLL failures in a row, poll meanwhile. */
  retry(upSince) {
    if (upSince && Date.now() - upSince > STABLE_MS) this.attempt = 0;
    this.failed = upSince ? 0 : this.failed + 1;
    const wait = Math.min(CAP_MS, 500 * 2 ** this.attempt) * (0.5 + Math.random() / 2);
    this.attempt += 1;
    if (this.failed >= FAILS_BEFORE_POLL && this.h.poll && !this.fallback) {
      this.fallback = new Poll(this.h);
      this.fallback.start();
    }
    if (!this.fallback) this.h.status("offline: reconnecting", false);
    this.timer = setTimeout(() => this.connect(), wait);
  }

  signedOut() {
    this.ended = true;
    this.stopFallback();
    this.h.status("signed out by the server: sign in again", false);
  }

  stopFallback() {
    if (this.fallback) this.fallback.stop();
    this.fallback = null;
  }

  frame(frame) {
    if (frame.action === "authed") {
      this.failed = 0;
      this.stopFallback();
      this.h.status("live", true);
      for (const msg of frame.messages || []) this.h.message(msg);
      if (this.state === null) this.state = frame.state;
      else this.catchUp();
    } else if (frame.action === "message" && frame.message) {
      this.h.message(frame.message);
      this.catchUp();
    } else if (frame.action === "changed") {
      this.catchUp();
    } else if (frame.action === "delivery") {
      this.h.delivery(frame);
    } else if (frame.ok === false && frame.action === "auth") {
      this.signedOut();
    }
  }

  /** /changes since the last state, all pages; one run at a time (a second is queued). */
  async catchUp() {
    if (this.catching) {
      this.again = true;
      return this.catching;
    }
    this.catching = (async () => {
      try {
        do {
          this.again = false;
          let more = true;
          while (more && this.state !== null) {
            const c = await this.api.changes(this.state);
            this.h.changes(c);
            this.state = c.state;
            more = c.has_more;
          }
        } while (this.again);
      } catch (err) {
        if (err.code === "cannot_calculate_changes") {
          this.state = null;
          this.h.resync();
        }
      } finally {
        this.catching = null;
      }
    })();
    return this.catching;
  }

  /** Go offline until resume(): the socket is closed and not reopened (tests, and a
   * person who wants the page quiet). */
  pause() {
    this.paused = true;
    clearTimeout(this.timer);
    this.stopFallback();
    if (this.ws) this.ws.close();
    this.h.status("paused", false);
  }

  resume() {
    this.paused = false;
    this.attempt = 0;
    this.failed = 0;
    if (!this.ws) this.connect();
  }

  /** Drop the socket now (as a network failure would); it reconnects by itself. */
  drop() {
    if (this.ws) this.ws.close();
  }

  stop() {
    this.closed = true;
    clearTimeout(this.timer);
    this.stopFallback();
    if (this.ws) this.ws.close();
  }
}

/** The fallback while the socket cannot open: the mailbox asked again every few seconds
 * while the page is visible (handlers.poll). */
class Poll {
  constructor(handlers, everyMs = 4000) {
    this.h = handlers; // {poll(), status(text, up)}
    this.everyMs = everyMs;
  }

  start() {
    this.h.status("no live connection: checking every few seconds", true);
    this.timer = setInterval(() => {
      if (document.visibilityState === "visible") this.h.poll().catch(() => this.h.status("offline", false));
    }, this.everyMs);
  }

  stop() {
    clearInterval(this.timer);
  }
}
