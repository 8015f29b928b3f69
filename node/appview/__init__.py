"""The app's reading side: indexes and views over what the node holds."""
