"""Feed generators a node hosts: the interface (base), the built-in ones, the host."""

from .base import MAX_ROWS, FeedContext, FeedGenerator, PostRef
from .host import FeedHost, PluginError, load_plugin

__all__ = [
    "MAX_ROWS",
    "FeedContext",
    "FeedGenerator",
    "FeedHost",
    "PluginError",
    "PostRef",
    "load_plugin",
]
