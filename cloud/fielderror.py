"""The one error type of cloud domain code: bad input, naming the field it is about."""

from __future__ import annotations


class FieldError(ValueError):
    """Input that cannot be used; ``field`` names it (the API answers 422 with it)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFoundError(FieldError):
    """The thing ``field`` names does not exist (the API answers 404)."""
