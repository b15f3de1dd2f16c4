// Whom this browser sent each message to in Bcc, and what the server answered for them.
//
// Why: the sender's sent record on the server is one row per message, written from the
// first copy submitted (the To/Cc copy); the BCC copies share its id, so the server keeps
// neither their recipients nor their delivery state (reported; the xfail in
// tests/web/test_web_bcc.py waits for it). Until it does, the sent view shows the BCC
// recipients this browser remembers, each with the answer it got when sending, said to
// be that and nothing more (never as a delivery state the server vouches for). Another
// browser, or this one after its storage is cleared, shows only what the server keeps.

const KEY = "flux.sent-bcc.v1";
const KEPT = 500; // the most recent messages sent with Bcc

function stored() {
  try {
    const parsed = JSON.parse(localStorage.getItem(KEY) || "{}");
    return parsed && typeof parsed === "object" && !Array.isArray(parsed) ? parsed : {};
  } catch {
    return {};
  }
}

/** Remember that message `id` went in Bcc to each address of `outcomes` ({fx1: answer}). */
export function rememberBcc(id, outcomes) {
  if (!id || !outcomes || !Object.keys(outcomes).length) return;
  const all = stored();
  delete all[id];
  all[id] = outcomes;
  const ids = Object.keys(all);
  for (const old of ids.slice(0, Math.max(0, ids.length - KEPT))) delete all[old];
  try {
    localStorage.setItem(KEY, JSON.stringify(all));
  } catch {
    /* storage full or disabled: the sent view then shows what the server keeps */
  }
}

/** {fx1: answer when sent} for message `id`, or null. */
export function bccSent(id) {
  const found = stored()[id];
  return found && typeof found === "object" ? found : null;
}
