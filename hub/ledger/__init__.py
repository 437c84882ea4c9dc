"""The reward ledger: pure reward arithmetic and chain rules (rewards.py, entries.py), the SQL
ledger over them (ledger.py), its group-commit writer and the hub's signing key."""
