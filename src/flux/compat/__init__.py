"""The prototype's dialect (levkris/flux-protocol 2.1.1), translated at FLUX's edge.

FLUX accepts what the prototype produces and produces what it accepts, except where
docs/PROTOCOL.md §13 deliberately fixes a flaw; there the prototype's code gets a clear,
named refusal, never a silent no-op and never silently lost mail. At the envelope level
nothing needs translating (canonical bytes and seals agree). Above it the two differ in
frames, field names, answer shapes and library names, and every such difference is
translated here, in this package, so that FLUX's core (`flux.protocol`), its stores and
its routes have no prototype special cases. A reader finds the whole story in these
modules:

- `compat.ws`: the WebSocket. Each socket speaks one dialect, chosen at auth (an explicit
  `dialect` field in the auth frame; else the prototype's for a socket authenticated by a
  legacy token, FLUX's for a session). A prototype socket gets `{type: "msg", msg}` pushes
  and `queued` in `authed`, so a message is only ever acknowledged (and so marked
  delivered) by a client that could read it. The prototype's request frames
  (`send {msg}`, `tag {tag, tag_action}`) are accepted from any socket.
- `compat.http`: the HTTP routes. A middleware rewrites the prototype's request forms
  (`/tag {tag, action}`, `/mail/send {reply_to}`, `/account/register {display_name}`)
  and, for a request in the prototype's dialect (an `X-Flux-Dialect` header, or a legacy
  token in `X-Flux-Token` / `?token=`), the answer shapes that conflict with FLUX's
  (`/inboxes` as a list of names). Fields the prototype reads that do not conflict
  (`count`, `online`, `session`, `flux_address`, `delivery`, `cc`, `bcc`) are plain
  parts of FLUX's answers. `POST /ack` is refused by name.
- `compat.federation` (and `compat.mesh`): name resolution, delivery to and from a
  prototype server (its `/send`), and meshes with prototype peers (written separately).
- `compat.library`: the prototype's library names (`FluxIdentity`, `build_message`,
  `verify_message`, `FluxClient`, `make_app`, `run_server`, `derive_token`,
  `encrypt_message`) over FLUX's own (written separately).

Two rules hold on every transport, for both dialects: a field an endpoint would ignore is
refused by name (`wire.only`), and an envelope whose `bcc` lists several addresses (the
prototype's one envelope for every audience) is refused naming `bcc` (server/submission.py;
PROTOCOL.md §13), because delivering it as signed would show every recipient the BCC list.

The WebSocket and HTTP dialect rules are documented for clients in docs/API.md,
"Dialects".
"""
