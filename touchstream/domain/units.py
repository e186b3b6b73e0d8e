"""Units every part of the domain counts in: times are epoch milliseconds (UTC)."""

DAY_MS = 86_400_000
