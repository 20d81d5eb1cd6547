"""The User document (MongoDB through Beanie)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from beanie import Document, Indexed
from pydantic import Field


def normalise_email(email: str) -> str:
    """The one spelling of an address that is stored and looked up."""
    return email.strip().lower()


class User(Document):
    first_name: str
    last_name: str
    # Unique: concurrent signups with one address end with one account, the rest get a 409.
    email: Annotated[str, Indexed(unique=True)]
    password_hash: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    class Settings:
        name = "users"

    @property
    def display_name(self) -> str:
        return f"{self.first_name} {self.last_name}"

    @classmethod
    async def by_email(cls, email: str) -> User | None:
        # The value is always a str here (forms.py guarantees it), so it can never be an operator.
        return await cls.find_one({"email": normalise_email(email)})
