"""The API reads JSON only; any other content type is a 415."""

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class StorefrontJSONParser(JSONParser):
    """DRF's JSON parser, made total: a body nested thousands of levels deep makes Python's
    decoder raise RecursionError, which DRF does not catch and would turn into a 500."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply") from None
