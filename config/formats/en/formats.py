"""One time format everywhere in the admin: UTC, to the second (the admin's lists, its forms
and any datetime a template prints). Templates that format explicitly use the same format
through ``common.formatting.UTC_FORMAT``."""

DATETIME_FORMAT = r"Y-m-d H:i:s \U\T\C"
SHORT_DATETIME_FORMAT = DATETIME_FORMAT
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = DATE_FORMAT
TIME_FORMAT = "H:i:s"
