"""Errors of the local broker, each worded so the operator knows what to do next."""

from __future__ import annotations


class LocalKafkaError(RuntimeError):
    """The local Kafka could not be fetched, started or stopped; the message says why."""


class ToolMissingError(LocalKafkaError):
    """``java`` or ``mvn`` is not installed (or JAVA_HOME points nowhere)."""


class PortInUseError(LocalKafkaError):
    def __init__(self, host: str, port: int, option: str) -> None:
        self.host, self.port, self.option = host, port, option
        super().__init__(
            f"port {port} on {host} is already in use (another Kafka or service listens "
            f"there); choose a free one with {option} N"
        )


class BrokerStartError(LocalKafkaError):
    """The broker process exited or never answered; the message holds the log tail."""
