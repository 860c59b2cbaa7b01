"""The eventforge fixtures (private brokers) load through the pytest11 entry point of eventforge-core."""
