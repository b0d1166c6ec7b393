"""Command-line entry points for sed-listen and sed-tag, and what they share."""
