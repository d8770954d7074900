"""bot.channels package."""
