"""The handlers behind every route: they read the request, call accounts/services, render."""
