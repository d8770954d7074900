"""Natural-language understanding: intents and entities from what people type, in English and Chinese."""
