"""Accounts beyond one node: portability (migration, rotation), moderation, handles."""
