"""The calendar days a request may name (the read API's usage, the admin's dashboard and ledger export): far
enough from `date.min` and `date.max` that a range's default start (a month before its end) and its end's
next midnight (the upper bound of a query) stay inside Python's calendar."""

from datetime import date

FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(9998, 12, 31)
