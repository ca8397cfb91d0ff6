"""Commands of this group are added by the issue that builds them."""


def register(commands) -> None:
    """Add this group's commands to ``commands`` (an argparse sub-parser set)."""
