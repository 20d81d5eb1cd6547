"""The User document (MongoDB through Beanie)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from beanie import Document, Indexed
from pydantic import BaseModel, Field
from pymongo import IndexModel
from pymongo.errors import DuplicateKeyError


def normalise_email(email: str) -> str:
    """The one spelling of an address that is stored and looked up."""
    return email.strip().lower()


class Passkey(BaseModel):
    """A registered passkey: its public key and what the authenticator last said about it."""

    id: str  # the credential id, base64url
    public_key: str  # COSE key, base64url
    sign_count: int
    backup_eligible: bool
    backed_up: bool
    transports: list[str] = Field(default_factory=list)
    name: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    last_used_at: datetime | None = None


class User(Document):
    first_name: str
    last_name: str
    # Unique: concurrent signups with one address end with one account, the rest get a 409.
    email: Annotated[str, Indexed(unique=True)]
    password_hash: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    email_verified_at: datetime | None = None
    # Second factors. The TOTP secret is sealed (AES-GCM, web/crypto.py); recovery codes are
    # hashes; the last accepted TOTP time step makes each code single use.
    totp_secret: str | None = None
    totp_last_step: int | None = None
    recovery_codes: list[str] = Field(default_factory=list)
    # The WebAuthn user handle (random, not the id): what a discoverable passkey names.
    webauthn_handle: Annotated[str | None, Indexed(sparse=True)] = None
    passkeys: list[Passkey] = Field(default_factory=list)

    class Settings:
        name = "users"
        indexes: ClassVar[list[IndexModel]] = [
            # One credential names one passkey, on one account: two accounts registering the same
            # id at once both pass the check before either writes, and only this can refuse one.
            IndexModel(
                "passkeys.id",
                name="passkey_id",
                unique=True,
                partialFilterExpression={"passkeys.id": {"$exists": True}},
            )
        ]

    @property
    def display_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

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

    async def keep_webauthn_handle(self, candidate: str) -> str:
        """Store `candidate` as the account's WebAuthn user handle unless it has one; return the
        one stored (a passkey registered under any other could never sign in)."""
        collection = self.get_pymongo_collection()
        await collection.update_one(
            {"_id": self.id, "webauthn_handle": None}, {"$set": {"webauthn_handle": candidate}}
        )
        stored = await collection.find_one({"_id": self.id}, projection={"webauthn_handle": 1})
        self.webauthn_handle = (stored or {}).get("webauthn_handle") or candidate
        return self.webauthn_handle

    async def swap_password_hash(self, old: str, new: str) -> bool:
        """Replace the hash only if it is still `old` (a rehash must not undo a password change)."""
        result = await self.get_pymongo_collection().update_one(
            {"_id": self.id, "password_hash": old}, {"$set": {"password_hash": new}}
        )
        return result.modified_count == 1

    @property
    def two_factor(self) -> bool:
        """Whether a password alone is not enough to sign in."""
        return self.totp_secret is not None

    async def take_totp_step(self, step: int) -> bool:
        """Record `step` as used, if it is later than the last one (of two racing requests with
        one code, only one gets it)."""
        result = await self.get_pymongo_collection().update_one(
            {"_id": self.id, "$or": [{"totp_last_step": None}, {"totp_last_step": {"$lt": step}}]},
            {"$set": {"totp_last_step": step}},
        )
        return result.modified_count == 1

    async def take_recovery_code(self, code_hash: str) -> bool:
        """Use a recovery code up: true for exactly one of any requests racing with it."""
        result = await self.get_pymongo_collection().update_one(
            {"_id": self.id, "recovery_codes": code_hash}, {"$pull": {"recovery_codes": code_hash}}
        )
        if result.modified_count == 1:
            self.recovery_codes = [h for h in self.recovery_codes if h != code_hash]
        return result.modified_count == 1

    async def passkey_used(self, credential_id: str, sign_count: int, backed_up: bool) -> bool:
        """Store a passkey's new counter, if it still goes up (two sign-ins racing with one clone)."""
        counter = {"$lt": sign_count} if sign_count > 0 else 0
        result = await self.get_pymongo_collection().update_one(
            {"_id": self.id, "passkeys": {"$elemMatch": {"id": credential_id, "sign_count": counter}}},
            {
                "$set": {
                    "passkeys.$.sign_count": sign_count,
                    "passkeys.$.backed_up": backed_up,
                    "passkeys.$.last_used_at": datetime.now(UTC),
                }
            },
        )
        return result.modified_count == 1

    async def add_passkey(self, passkey: Passkey) -> bool:
        """Add a passkey, unless the password changed since this document was read (see
        add_factor), or an account already has one with its id (two requests racing)."""
        update = {"$push": {"passkeys": passkey.model_dump()}}
        try:
            # The unique index covers other accounts; within one document it does not.
            if not await self.add_factor(update, **{"passkeys.id": {"$ne": passkey.id}}):
                return False
        except DuplicateKeyError:
            return False
        self.passkeys.append(passkey)
        return True

    async def add_factor(self, update: dict[str, Any], **still: Any) -> bool:
        """Write a new second factor only if the password is still the one this request read.

        A password reset wipes the factors of an account whose address was never confirmed
        (whoever made it may not own the address): a factor added by a request already under
        way must then fail here, or land before the reset's new password and be wiped with the rest.
        `still`: more fields that must have these values (totp_secret=None: not on already).
        """
        result = await self.get_pymongo_collection().update_one(
            {"_id": self.id, "password_hash": self.password_hash, **still}, update
        )
        return result.modified_count == 1

    async def rename_passkey(self, credential_id: str, name: str) -> bool:
        result = await self.get_pymongo_collection().update_one(
            {"_id": self.id, "passkeys.id": credential_id}, {"$set": {"passkeys.$.name": name}}
        )
        return result.matched_count == 1

    async def remove_passkey(self, credential_id: str) -> bool:
        result = await self.get_pymongo_collection().update_one(
            {"_id": self.id, "passkeys.id": credential_id}, {"$pull": {"passkeys": {"id": credential_id}}}
        )
        self.passkeys = [p for p in self.passkeys if p.id != credential_id]
        return result.modified_count == 1

    @classmethod
    async def id_by_webauthn_handle(cls, handle: str) -> str | None:
        """Just the id of the account a passkey names (a sign-in reads the epoch before the rest)."""
        found = await cls.get_pymongo_collection().find_one(
            {"webauthn_handle": handle}, projection={"_id": 1}
        )
        return str(found["_id"]) if found else None
