pytest_plugins = ["eventforge.testing.pytest_plugin"]
