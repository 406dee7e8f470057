"""Cron schedules read by croniter (pallets-eco), in a time zone from the standard library's zoneinfo.

What CronJob takes is what this takes: five fields or a macro (@daily, ...), read in `timeZone` (UTC
when unset). A six-field form with seconds first is accepted only when the operator is told so
(NBKUBE_SCHEDULE_SECONDS_FIELD, for tests that need runs seconds apart: CronJob has no seconds field).

Daylight saving time, as croniter steps through it: a time in the hour a spring change skips runs at
the first moment after it (02:30 on a day 02:00 becomes 03:00 runs at 03:00); a time in the hour an
autumn change repeats runs once per offset (twice). Times are compared as instants, so a run's name
and its scheduled time never repeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

# More missed times than this since the last run: a warning (as CronJob's TooManyMissedTimes), and the
# most recent one is found without stepping through them all.
MAX_MISSED_COUNTED = 100
SECONDS_FIELD_SETTING = "NBKUBE_SCHEDULE_SECONDS_FIELD"


class InvalidSchedule(ValueError):
    """A schedule or time zone the parser refuses, with its message."""


@dataclass(frozen=True)
class CronSchedule:
    expression: str
    zone: tzinfo
    zone_name: str
    seconds: bool  # the six-field form: times to the second

    @classmethod
    def parse(cls, expression: str, time_zone: str | None, *, seconds_field: bool = False) -> CronSchedule:
        """The schedule, or InvalidSchedule saying what is wrong with it."""
        zone: tzinfo = UTC
        if time_zone:
            try:
                zone = ZoneInfo(time_zone)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise InvalidSchedule(f"unknown time zone {time_zone!r}: {exc}") from None
        text = " ".join(expression.split())
        fields = 1 if text.startswith("@") else len(text.split(" "))
        if fields == 6 and not seconds_field:
            raise InvalidSchedule(
                f"schedule {expression!r} has six fields: a seconds field is for tests only (the operator's "
                f"{SECONDS_FIELD_SETTING}); use five: minute hour day-of-month month day-of-week"
            )
        if fields not in (1, 5, 6):
            raise InvalidSchedule(
                f"schedule {expression!r}: expected five fields (minute hour day-of-month month "
                "day-of-week) or a macro such as @daily"
            )
        schedule = cls(text, zone, time_zone or "UTC", seconds=fields == 6)
        try:
            schedule._iterator(datetime.now(UTC)).get_next(datetime)
        except CroniterBadDateError:
            raise InvalidSchedule(f"schedule {expression!r} never matches a date") from None
        except CroniterError as exc:
            raise InvalidSchedule(f"schedule {expression!r}: {exc}") from None
        return schedule

    def _iterator(self, start: datetime) -> croniter:
        return croniter(self.expression, start.astimezone(self.zone), second_at_beginning=self.seconds)

    def next_after(self, moment: datetime) -> datetime:
        """The first scheduled time strictly after `moment` (UTC)."""
        found: datetime = self._iterator(moment).get_next(datetime)
        return found.astimezone(UTC)

    def most_recent(self, earliest: datetime, now: datetime) -> tuple[datetime | None, int]:
        """The latest scheduled time in (earliest, now] and how many there are (counted up to
        MAX_MISSED_COUNTED + 1): CronJob's getMostRecentScheduleTime."""
        iterator = self._iterator(earliest)
        latest: datetime | None = None
        count = 0
        while True:
            candidate = iterator.get_next(datetime).astimezone(UTC)
            if candidate > now:
                return latest, count
            latest, count = candidate, count + 1
            if count > MAX_MISSED_COUNTED:
                break
        # Too many to step through: the latest at or before now, found backwards from the next whole
        # second (minute) after it: scheduled times fall on whole seconds (minutes).
        if self.seconds:
            start = now.replace(microsecond=0) + timedelta(seconds=1)
        else:
            start = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        before: datetime = self._iterator(start).get_prev(datetime)
        return before.astimezone(UTC), count

    def local(self, moment: datetime) -> datetime:
        """`moment` in the schedule's time zone."""
        return moment.astimezone(self.zone)
