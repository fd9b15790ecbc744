"""infnet: multi-task ranking for recommendation and advertising, built around INFNet."""

__version__ = "0.1.0"
