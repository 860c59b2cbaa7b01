"""pytest plugin of eventforge (fixtures for private brokers)."""
