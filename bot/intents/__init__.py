"""bot.intents package."""
