"""The prototype's WebSocket dialect, translated at the edge of /ws (docs/API.md, "Dialects").

One server speaks both dialects; each socket speaks one, chosen when it authenticates
(`socket_dialect`): the auth frame's optional `dialect` field (`"flux"` or `"prototype"`)
if it has one, else the prototype's dialect for a socket that authenticated with a legacy
token (the prototype's client has no other way to say who it is, and only it uses that
token on /ws) and FLUX's for a session token. FLUX's own client, even holding a legacy
token, sends `dialect: "flux"`, so it never sees the prototype's shapes.

Frames the server sends (`to_prototype`), for a prototype socket only:

| FLUX                                         | prototype                                  |
|----------------------------------------------|--------------------------------------------|
| `{action: "message", message, state}`        | `{type: "msg", msg, state}`                |
| `{action: "authed", messages, ...}`          | the same, plus `queued` (= `messages`)     |
| answer to `tag`: `{ok, action, tags}`        | plus `tag`, `tag_action`, `applied: true`  |
| answer to `send`: `{ok, action, id, recipients, ...}` | plus `delivery` (the `to` outcome)  |
| answer to `read` / `delete` / `move`         | plus `read` / `deleted` / `moved: true`    |

Everything else (answers, errors, `changed`) is the same in both: the prototype's client
ignores frames it does not know. Translating every push is what keeps a prototype client
from losing mail: a message is marked delivered when the socket's pong acknowledges the
frame that carried it (server/push.py), and a socket only ever gets frames in the dialect
it speaks, so the frame it acknowledged is one its client read as a message.

Frames the server receives (`request_frame`), from any socket: the prototype's request
forms are unambiguous, so they are accepted whatever the socket's dialect and rewritten
to FLUX's before the action's strict field check: `send {msg}` → `send {message}`,
`tag {tag, tag_action}` → `tag {add: [tag]}` or `{remove: [tag]}`. Mixing both forms in
one frame is refused naming the prototype's field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..protocol.errors import InvalidValue, WrongType

__all__ = ["FLUX", "PROTOTYPE", "request_frame", "socket_dialect", "to_prototype"]

FLUX = "flux"
PROTOTYPE = "prototype"
DIALECTS = (FLUX, PROTOTYPE)


def socket_dialect(frame: Mapping[str, Any], *, legacy: bool) -> str:
    """The dialect of a socket whose auth frame is `frame`; `legacy`: it authenticated with
    the prototype's token. Raises InvalidValue naming `dialect` for an unknown one."""
    chosen = frame.get("dialect")
    if chosen is None:
        return PROTOTYPE if legacy else FLUX
    if chosen not in DIALECTS:
        raise InvalidValue('dialect must be "flux" or "prototype"', field="dialect")
    return chosen


def tag_name(tag: Any) -> Any:
    """A tag as the prototype stored and echoed it: trimmed and lower-cased."""
    return tag.strip().lower() if isinstance(tag, str) else tag


def tag_change(frame: Mapping[str, Any], action_field: str) -> dict[str, Any]:
    """`{tag, <action_field>: "add"|"remove"}` (the prototype's one-tag form) as FLUX's
    `{add: [tag]}` / `{remove: [tag]}`; the tag lower-cased and trimmed, as the prototype
    did. A frame without `tag` is returned unchanged. Raises WrongType / InvalidValue
    naming `tag` or `action_field`."""
    if "tag" not in frame:
        return dict(frame)
    if "add" in frame or "remove" in frame:
        raise InvalidValue("give tag (with its action) or add/remove, not both", field="tag")
    tag, action = frame["tag"], frame.get(action_field, "add")
    if not isinstance(tag, str):
        raise WrongType("tag must be a string", field="tag")
    if action not in ("add", "remove"):
        raise InvalidValue(f"{action_field} must be 'add' or 'remove'", field=action_field)
    rest = {k: v for k, v in frame.items() if k not in ("tag", action_field)}
    return {**rest, action: [tag_name(tag)]}


def request_frame(frame: Mapping[str, Any]) -> dict[str, Any]:
    """A request frame with the prototype's forms rewritten to FLUX's (module docstring).
    Raises InvalidValue / WrongType naming the prototype's field."""
    action = frame.get("action")
    if action == "send" and "msg" in frame:
        if "message" in frame:
            raise InvalidValue("give message or msg, not both", field="msg")
        rest = {k: v for k, v in frame.items() if k != "msg"}
        return {**rest, "message": frame["msg"]}
    if action == "tag":
        return tag_change(frame, "tag_action")
    return dict(frame)


def to_prototype(frame: Mapping[str, Any]) -> Mapping[str, Any]:
    """A frame the server sends, as a prototype socket gets it (module docstring)."""
    action = frame.get("action")
    if action == "message" and "message" in frame:
        return {"type": "msg", "msg": frame["message"], "state": frame.get("state")}
    if action == "authed":
        return {**frame, "queued": frame.get("messages", [])}
    return frame


#: the prototype's yes/no field in its answer to each mark: did it change anything
MARKS = {"read": "read", "delete": "deleted"}


def prototype_answer(request: Mapping[str, Any], answer: Mapping[str, Any]) -> Mapping[str, Any]:
    """An answer to `request` as a prototype socket gets it: the prototype's fields added
    to FLUX's (module docstring). Error answers are left as they are."""
    if not answer.get("ok"):
        return answer
    if answer.get("action") == "tag" and "tag" in request:
        return {**answer, "tag": tag_name(request["tag"]),
                "tag_action": request.get("tag_action", "add"),
                "applied": True}  # fmt: skip
    if answer.get("action") in MARKS:
        return {**answer, MARKS[answer["action"]]: bool(answer.get("updated"))}
    if answer.get("action") == "move":
        return {**answer, "moved": True}  # an id not in the mailbox is an error answer
    if answer.get("action") == "send":
        message = request.get("msg") or request.get("message") or {}
        to = message.get("to") if isinstance(message, Mapping) else None
        return {**answer, "delivery": answer.get("recipients", {}).get(to)}
    return answer
