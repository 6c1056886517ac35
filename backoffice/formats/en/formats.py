"""Dates and times in the admin as ISO-like 24-hour UTC values: "2026-11-25 18:54:50" is as short as it gets,
sorts as text, and reads the same as the API's timestamps and the logs ("Nov. 25, 2026, 6:54 p.m." took
a list column twice the width). Django reads this through FORMAT_MODULE_PATH (config/settings/base.py)."""

DATE_FORMAT = "Y-m-d"
DATETIME_FORMAT = "Y-m-d H:i:s"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = "Y-m-d H:i"
TIME_FORMAT = "H:i:s"
