"""core.db package."""
