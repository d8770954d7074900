"""core.domain package."""
