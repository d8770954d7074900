"""crmbot.api package."""
