"""Inputs shared by the serving tests."""

QUERY = "how long does the battery last"
SHORT_DOCS = [
    "The cafeteria opens at 8 am on weekdays.",
    "A full charge lasts about nine hours of normal operation.",
    "Expense reports are due within thirty days of travel.",
    "battery battery battery",
    "zzz qqq xxx",
]
LONG_DOC = "Dock the unit and wait for the green LED before undocking. " * 40  # over 128 tokens
