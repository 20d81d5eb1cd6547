"""Test plumbing shared by the tests, the browser tests and the benchmark: launching the app,
counting Redis commands, real SMTP and Sentinel servers, a software authenticator."""
