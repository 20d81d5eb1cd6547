"""Server-side sessions and password authentication, done right."""
