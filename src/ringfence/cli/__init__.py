"""The ``ringfence`` command line: typer commands, thin over an HTTP client of the API."""
