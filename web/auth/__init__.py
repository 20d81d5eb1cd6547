"""Accounts: users, passwords, sign-in throttling and the sign-up/in/out views."""
