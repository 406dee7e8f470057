"""May this user do that here: SubjectAccessReview, with decisions cached briefly.

An allowed decision is reused for `allowed_ttl` seconds and a denial for `denied_ttl`; neither is ever
served past its TTL, so a removed RoleBinding takes effect within `allowed_ttl`. Concurrent requests with
the same question share one review.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nbkube.userapi.frontproxy import UserInfo
from nbkube.userapi.paths import GROUP

SAR_PATH = "/apis/authorization.k8s.io/v1/subjectaccessreviews"

Review = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Attributes:
    """What is asked: a verb on a (sub)resource of our API group, in a namespace, by name."""

    namespace: str
    verb: str
    resource: str
    subresource: str
    name: str

    def resource_attributes(self) -> dict[str, str]:
        return {
            "namespace": self.namespace,
            "verb": self.verb,
            "group": GROUP,
            "resource": self.resource,
            "subresource": self.subresource,
            "name": self.name,
        }


class Authorizer:
    def __init__(
        self,
        review: Review,
        *,
        allowed_ttl: float = 10.0,
        denied_ttl: float = 5.0,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._review = review
        self._allowed_ttl = allowed_ttl
        self._denied_ttl = denied_ttl
        self._max = max_entries
        self._clock = clock
        self._cache: OrderedDict[tuple[Any, ...], tuple[float, bool, str]] = OrderedDict()
        self._inflight: dict[tuple[Any, ...], asyncio.Future[tuple[bool, str]]] = {}

    async def check(self, user: UserInfo, attributes: Attributes) -> tuple[bool, str]:
        """(allowed, the authoriser's reason)."""
        key = (user, attributes)
        hit = self._cache.get(key)
        now = self._clock()
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(key)
            return hit[1], hit[2]
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[tuple[bool, str]] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            decision = await self._ask(user, attributes)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        finally:
            self._inflight.pop(key, None)
        future.set_result(decision)
        ttl = self._allowed_ttl if decision[0] else self._denied_ttl
        self._cache[key] = (self._clock() + ttl, *decision)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return decision

    async def _ask(self, user: UserInfo, attributes: Attributes) -> tuple[bool, str]:
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {**user.review_user(), "resourceAttributes": attributes.resource_attributes()},
        }
        status = (await self._review(body)).get("status") or {}
        allowed = bool(status.get("allowed")) and not status.get("denied")
        return allowed, str(status.get("reason") or "")
