"""The benchmark: wrk against the app served by uvicorn, on real Redis and SecantusDB (python -m bench)."""
