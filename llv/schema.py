"""Typed configuration: one dataclass per config node, checked when a config is composed."""


def validate(command: str, cfg) -> None:
    """Check every key of ``cfg`` (a composed ``command`` config); one-line LlvError if wrong."""
