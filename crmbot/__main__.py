"""`python -m crmbot` runs the CLI."""

from crmbot.cli import main

main()
