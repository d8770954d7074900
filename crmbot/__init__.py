"""crmbot package."""
