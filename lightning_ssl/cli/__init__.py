"""The lssl command line."""
