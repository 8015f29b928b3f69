"""The node half of the atproto bridge (docs/atproto-bridge.md, "Node side")."""
