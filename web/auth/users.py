"""The User document (MongoDB through Beanie)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

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
    email_verified_at: datetime | None = None

    class Settings:
        name = "users"

    @property
    def display_name(self) -> str:
        return f"{self.first_name} {self.last_name}"

    @classmethod
    async def by_email(cls, email: str) -> User | None:
        # The value is always a str here (forms.py guarantees it), so it can never be an operator.
        return await cls.find_one({"email": normalise_email(email)})

    @classmethod
    async def id_by_email(cls, email: str) -> str | None:
        """Just the id of the account with this address: sign-in reads the rest after the epoch."""
        found = await cls.get_pymongo_collection().find_one(
            {"email": normalise_email(email)}, projection={"_id": 1}
        )
        return str(found["_id"]) if found else None

    async def set_fields(self, **changes: Any) -> None:
        """Write only these fields ($set), never the whole document: a request that loaded this
        user earlier must not put back a field another request has changed since."""
        await self.get_pymongo_collection().update_one({"_id": self.id}, {"$set": changes})
        for name, value in changes.items():
            setattr(self, name, value)

    async def mark_verified(self) -> None:
        await self.set_fields(email_verified_at=datetime.now(UTC))

    async def swap_password_hash(self, old: str, new: str) -> bool:
        """Replace the hash only if it is still `old` (a rehash must not undo a password change)."""
        result = await self.get_pymongo_collection().update_one(
            {"_id": self.id, "password_hash": old}, {"$set": {"password_hash": new}}
        )
        return result.modified_count == 1
