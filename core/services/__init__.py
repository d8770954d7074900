"""core.services package."""
