"""Spam heuristics and the rate limiter (flux.protocol.spam): the prototype's thresholds."""

from __future__ import annotations

import pytest
from protocol_helpers import ALICE, BOB, NOW

from flux.protocol import RateLimiter, check_spam


def msg(content: str, subject: str | None = None, sender: str = ALICE.address) -> dict:
    out = {"from": sender, "to": BOB.address, "content": content}
    if subject is not None:
        out["subject"] = subject
    return out


def urls(n: int, total: int) -> str:
    text = " ".join(f"http://x{i}.io/" for i in range(n))
    filler = ("word " * 100)[: total - len(text) - 1]
    out = text + " " + filler
    assert len(out) == total
    return out


CASES = [
    ("clean", msg("Lunch tomorrow at noon? Bring the slides.", "Lunch"), []),
    ("blank", msg(""), ["empty content"]),
    ("whitespace", msg(" \n\t "), ["empty content"]),
    ("repetitive", msg("a" * 19 + "b"), ["repetitive content"]),  # 95 %
    ("exactly-85-percent", msg("a" * 17 + "bcd"), []),  # 85 % is not more than 85 %
    ("short-is-not-repetitive", msg("a" * 10), []),
    ("six-urls-per-200", msg(urls(6, 200)), ["excessive URLs"]),
    ("five-urls-per-200", msg(urls(5, 200)), []),
    ("six-urls-per-240", msg(urls(6, 240)), []),  # 5 per 200 chars: not more than 5
    ("keywords-5", msg("WINNER! Claim your prize today"), ["spam keyword score 5"]),
    ("keywords-4", msg("act now, buy now"), ["spam keyword score 4"]),
    ("keywords-3", msg("free money for everyone"), []),
    ("keyword-in-subject", msg("see subject", "Verify your account"), []),  # 3
    ("keyword-in-subject-4", msg("click here", "cheap meds"), ["spam keyword score 5"]),
    ("subject-raises-to-threshold", msg("act now", "HELLO THERE!!!"), ["abusive subject line"]),
    ("subject-caps-alone", msg("act now", "HELLO THERE"), []),  # 2 + 1
    ("subject-punct-alone", msg("act now", "really???"), []),  # 2 + 1
    ("subject-without-keywords", msg("hi", "HELLO!!!"), []),  # 0 + 2
]


@pytest.mark.parametrize(("name", "message", "reasons"), CASES, ids=[c[0] for c in CASES])
def test_spam_reasons(name: str, message: dict, reasons: list[str]) -> None:
    verdict = check_spam(message, None, NOW)
    assert list(verdict.reasons) == reasons
    assert verdict.is_spam is bool(reasons)


def test_every_reason_is_reported() -> None:
    content = "winner, claim your prize " + "!" * 400
    verdict = check_spam(msg(content), None, NOW)
    assert verdict.reasons == ("repetitive content", "spam keyword score 5")
    links = "http://a.io/ " * 10 + "act now buy now"
    assert check_spam(msg(links), None, NOW).reasons == ("excessive URLs", "spam keyword score 4")


def test_scores() -> None:
    assert check_spam(msg("winner winner"), None, NOW).score == 2  # phrases count once
    assert check_spam(msg("act now", "HELLO!!!"), None, NOW).score == 4


# -- rate limiter -------------------------------------------------------------------------


def test_21st_message_in_a_minute_is_refused() -> None:
    limiter = RateLimiter()
    for i in range(20):
        assert not limiter.hit(ALICE.address, NOW + i * 1000)
    assert limiter.hit(ALICE.address, NOW + 20_000)
    assert not limiter.hit(BOB.address, NOW + 20_000)  # another sender has its own budget
    assert limiter.hit(ALICE.address, NOW + 59_999)  # the first hit is still in the window
    assert not limiter.hit(ALICE.address, NOW + 60_000)  # ... and now it has left it
    assert limiter.hit(ALICE.address, NOW + 60_000)  # only one slot came free


def test_check_spam_applies_the_rate_first() -> None:
    limiter = RateLimiter()
    for _ in range(20):
        assert not check_spam(msg("hello"), limiter, NOW).is_spam
    verdict = check_spam(msg(""), limiter, NOW)
    assert verdict.reasons == ("rate limit exceeded", "empty content")
    assert not check_spam(msg("hello", sender=BOB.address), limiter, NOW).is_spam
    assert not check_spam(msg("hello"), limiter, NOW + 60_000).is_spam


def test_limiters_do_not_share_state() -> None:
    first, second = RateLimiter(), RateLimiter()
    for _ in range(20):
        first.hit(ALICE.address, NOW)
    assert first.hit(ALICE.address, NOW)
    assert not second.hit(ALICE.address, NOW)


def test_custom_limit_prune_and_active() -> None:
    limiter = RateLimiter(limit=2, window_ms=1000)
    assert not limiter.hit("a", 0) and not limiter.hit("a", 1) and limiter.hit("a", 2)
    limiter.hit("b", 500)
    assert limiter.active(600) == {"a": 2, "b": 1}
    limiter.prune(1_400)
    assert limiter.active(1_400) == {"b": 1}
    limiter.prune(1_500)
    assert limiter.active(1_500) == {}
