"""Review decisions are reused briefly and never past their TTL; one review answers concurrent asks."""

from __future__ import annotations

import asyncio
from typing import Any

from nbkube.userapi.authz import Attributes, Authorizer
from nbkube.userapi.frontproxy import UserInfo

ALICE = UserInfo(name="alice", groups=("team-a",))
LOG = Attributes("team-a", "get", "notebookruns", "log", "run")


class Answers:
    """The API server's answers to SubjectAccessReviews, as a list consumed in order."""

    def __init__(self, *allowed: bool) -> None:
        self.allowed = list(allowed)
        self.asked: list[dict[str, Any]] = []

    async def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        self.asked.append(body)
        await asyncio.sleep(0.01)
        return {"status": {"allowed": self.allowed.pop(0)}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_denial_is_never_served_past_its_ttl_nor_an_allowance_past_its_own() -> None:
    answers, clock = Answers(False, True, False), Clock()
    authorizer = Authorizer(answers, allowed_ttl=10, denied_ttl=5, clock=clock)
    assert (await authorizer.check(ALICE, LOG))[0] is False
    clock.now += 4.9
    assert (await authorizer.check(ALICE, LOG))[0] is False and len(answers.asked) == 1  # cached
    clock.now += 0.2  # past the denial's TTL: asked again, and now allowed (a RoleBinding was added)
    assert (await authorizer.check(ALICE, LOG))[0] is True and len(answers.asked) == 2
    clock.now += 9.9
    assert (await authorizer.check(ALICE, LOG))[0] is True and len(answers.asked) == 2
    clock.now += 0.2  # past the allowance's TTL: the binding was removed meanwhile
    assert (await authorizer.check(ALICE, LOG))[0] is False and len(answers.asked) == 3


async def test_concurrent_asks_share_one_review_and_other_questions_get_their_own() -> None:
    answers = Answers(True, False)
    authorizer = Authorizer(answers)
    results = await asyncio.gather(*(authorizer.check(ALICE, LOG) for _ in range(20)))
    assert all(allowed for allowed, _ in results) and len(answers.asked) == 1
    other = Attributes("team-b", "get", "notebookruns", "log", "run")
    assert (await authorizer.check(ALICE, other))[0] is False and len(answers.asked) == 2
    spec = answers.asked[1]["spec"]
    assert spec["user"] == "alice" and spec["groups"] == ["team-a"]
    assert spec["resourceAttributes"]["namespace"] == "team-b"


async def test_a_failed_review_is_not_cached() -> None:
    calls = 0

    async def flaky(body: dict[str, Any]) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("API server unreachable")
        return {"status": {"allowed": True}}

    authorizer = Authorizer(flaky)
    try:
        await authorizer.check(ALICE, LOG)
    except ConnectionError:
        pass
    else:
        raise AssertionError("the failure was swallowed")
    assert (await authorizer.check(ALICE, LOG))[0] is True and calls == 2
