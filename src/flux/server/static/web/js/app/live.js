// Live updates.
//
// Key sessions: the WebSocket /ws (API.md "WebSocket"). New mail arrives as `message`
// frames; `changed` and `delivery` frames say something changed elsewhere. After any
// reconnect (and after `changed`), the client asks /changes?since=<last state> and gets
// every message created or changed meanwhile, each once in its current state, so nothing
// pushed while the socket was down is missed. A `since` the server cannot answer
// (cannot_calculate_changes) means: reload everything. Reconnects back off (capped,
// jittered) and start afresh only after the socket stayed up for a while, as FluxClient.
// The browser answers the server's pings itself; that pong is the acknowledgement that
// marks pushed mail delivered.
//
// Password accounts: the WebSocket takes key sessions only, so an account's page asks
// its mailbox again every few seconds while it is visible (AccountPoll).

const STABLE_MS = 30_000;
const CAP_MS = 30_000;

export class KeyLive {
  constructor(api, handlers) {
    this.api = api;
    this.h = handlers; // {message(msg), changes({created, updated, sent}), delivery(frame), resync(), status(text, up)}
    this.state = null;
    this.attempt = 0;
    this.closed = false;
    this.catching = null;
    this.again = false;
  }

  start() {
    this.connect();
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws`;
  }

  connect() {
    if (this.closed || this.paused) return;
    this.h.status("connecting…", false);
    const ws = new WebSocket(this.url());
    this.ws = ws;
    let upSince = 0;
    ws.onopen = () => ws.send(JSON.stringify({ action: "auth", token: this.api.token, dialect: "flux" }));
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this.frame(frame);
      if (frame.action === "authed") upSince = Date.now();
    };
    ws.onclose = () => {
      if (this.ws === ws) this.ws = null;
      if (this.closed || this.paused) return;
      if (upSince && Date.now() - upSince > STABLE_MS) this.attempt = 0;
      const wait = Math.min(CAP_MS, 500 * 2 ** this.attempt) * (0.5 + Math.random() / 2);
      this.attempt += 1;
      this.h.status("offline: reconnecting", false);
      this.timer = setTimeout(() => this.connect(), wait);
    };
  }

  frame(frame) {
    if (frame.action === "authed") {
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
      this.h.status("signed out by the server", false);
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
    if (this.ws) this.ws.close();
    this.h.status("paused", false);
  }

  resume() {
    this.paused = false;
    this.attempt = 0;
    if (!this.ws) this.connect();
  }

  /** Drop the socket now (as a network failure would); it reconnects by itself. */
  drop() {
    if (this.ws) this.ws.close();
  }

  stop() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close();
  }
}

export class AccountPoll {
  constructor(api, handlers, everyMs = 4000) {
    this.api = api;
    this.h = handlers; // {poll()}
    this.everyMs = everyMs;
  }

  start() {
    this.h.status("live (checking every few seconds)", true);
    this.timer = setInterval(() => {
      if (document.visibilityState === "visible") this.h.poll().catch(() => this.h.status("offline", false));
    }, this.everyMs);
  }

  drop() {}
  pause() {
    clearInterval(this.timer);
  }
  resume() {
    this.start();
  }

  stop() {
    clearInterval(this.timer);
  }
}
