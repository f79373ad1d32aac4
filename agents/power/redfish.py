"""Whole-server power from the BMC over Redfish, as the ``platform`` zone.

docs/architecture.md, 'Algorithms' and 'Reliability'. A BMC answers in hundreds of
milliseconds to seconds and updates its reading every few seconds, so it is polled on a thread
of its own every ``interval_s``; the agent's reads never wait for it. Per chassis (the first
one with a reading, or ``chassis``) the power comes from, in order:
``EnvironmentMetrics.PowerWatts.Reading`` (current schema), ``Power.PowerControl[0].
PowerConsumedWatts`` (deprecated but what most BMCs serve), or the sum of
``PowerSubsystem/PowerSupplies/*/Metrics.InputPowerWatts.Reading``. ``EnergykWh`` of
EnvironmentMetrics, where present, is reported in the status: its resolution (often 1 Wh to
1 kWh) is too coarse for windows of seconds, so the counter integrates power instead.

The counter: each poll's power holds until the next poll (sample and hold), so the µJ value
the agent reads at any instant is E(last poll) + P(last poll) x (now - last poll), and a
later poll continues exactly where the hold left off (the counter never goes back). A poll
older than ``max_age_s`` is stale: the zone is then left out of readings (a gap the agent
counts), never extrapolated further and never 0; when the BMC answers again the counter
resumes, having added the hold only up to ``max_age_s`` (what reads may have handed out), not
the unknown energy of the rest of the gap. Windows that touch a gap carry no platform zone:
the processor uses a zone only where both bounding readings hold it.

Credentials: HTTP Basic from a file (``user:password`` on one line, or a directory holding
``username`` and ``password`` files, as a Kubernetes Secret mounts) or the environment
(JOULESTREAM_REDFISH_USERNAME / JOULESTREAM_REDFISH_PASSWORD). TLS certificates are verified
unless ``insecure``; ``ca_file`` names a private CA.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joulestream.agents.power.types import PowerStatus, PowerUnavailable

SOURCE = "redfish"
ZONE = "platform"
USERNAME_ENV = "JOULESTREAM_REDFISH_USERNAME"
PASSWORD_ENV = "JOULESTREAM_REDFISH_PASSWORD"
DEFAULT_INTERVAL_S = 5.0
DEFAULT_TIMEOUT_S = 5.0
_UJ_PER_KWH = 3.6e12


class RedfishError(RuntimeError):
    """The BMC did not give a power reading; the message says why."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status, when the BMC answered with an error


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def header(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"


def load_credentials(
    path: Path | None, environ: Mapping[str, str] = os.environ
) -> Credentials | None:
    """From ``path`` (file ``user:password``, or a directory with ``username`` and
    ``password``), else from the environment; None when neither gives any."""
    if path is not None:
        if path.is_dir():
            return Credentials(
                (path / "username").read_text().strip(), (path / "password").read_text().strip()
            )
        user, sep, password = path.read_text().strip().partition(":")
        if not sep or not user:
            raise ValueError(f"{path}: expected one line 'username:password'")
        return Credentials(user, password)
    if environ.get(USERNAME_ENV):
        return Credentials(environ[USERNAME_ENV], environ.get(PASSWORD_ENV, ""))
    return None


@dataclass(frozen=True)
class PowerSample:
    watts: float
    chassis: str
    origin: str  # which resource and property gave it
    energy_kwh: float | None


class RedfishClient:
    """GETs against one BMC: JSON in, RedfishError out (timeouts and HTTP errors included)."""

    def __init__(
        self,
        url: str,
        credentials: Credentials | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        insecure: bool = False,
        ca_file: Path | None = None,
    ) -> None:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"--redfish-url must be http(s)://host[:port], got {url!r}")
        self.base = f"{parsed.scheme}://{parsed.netloc}"
        self.credentials = credentials
        self.timeout_s = timeout_s
        self._context: ssl.SSLContext | None = None
        if parsed.scheme == "https":
            self._context = ssl.create_default_context(
                cafile=str(ca_file) if ca_file is not None else None
            )
            if insecure:
                self._context.check_hostname = False
                self._context.verify_mode = ssl.CERT_NONE

    def get(self, path: str) -> dict[str, Any]:
        request = urllib.request.Request(self.base + path, headers={"Accept": "application/json"})
        if self.credentials is not None:
            request.add_header("Authorization", self.credentials.header())
        try:
            with urllib.request.urlopen(
                request, timeout=self.timeout_s, context=self._context
            ) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            raise RedfishError(f"GET {path}: HTTP {exc.code} {exc.reason}", exc.code) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RedfishError(f"GET {self.base}{path}: {reason}") from exc
        except ValueError as exc:
            raise RedfishError(f"GET {path}: not JSON ({exc})") from exc
        if not isinstance(body, dict):
            raise RedfishError(f"GET {path}: expected a JSON object")
        return body

    def power(self, chassis: str | None = None) -> PowerSample:
        """The whole-server power of ``chassis`` (default: the first chassis with one)."""
        root = self.get("/redfish/v1/")
        collection = _link(root, "Chassis")
        if collection is None:
            raise RedfishError("the service root links no Chassis collection")
        members = [m["@odata.id"] for m in self.get(collection).get("Members", [])]
        if chassis is not None:
            members = [m for m in members if m.rstrip("/").rsplit("/", 1)[-1] == chassis]
            if not members:
                raise RedfishError(f"no chassis {chassis!r} under {collection}")
        problems: list[str] = []
        for member in members:
            try:
                sample = self._chassis_power(member)
            except RedfishError as exc:
                problems.append(str(exc))
                continue
            if sample is not None:
                return sample
            problems.append(f"{member}: no EnvironmentMetrics, Power or PowerSubsystem reading")
        raise RedfishError("; ".join(problems) or f"{collection} has no members")

    def _chassis_power(self, member: str) -> PowerSample | None:
        chassis = self.get(member)
        name = str(chassis.get("Id") or member)
        energy_kwh: float | None = None
        environment = self._linked(chassis, "EnvironmentMetrics")
        if environment is not None:
            energy_kwh = _reading(environment.get("EnergykWh"))
            watts = _reading(environment.get("PowerWatts"))
            if watts is not None:
                origin = f"{_link(chassis, 'EnvironmentMetrics')} PowerWatts"
                return PowerSample(watts, name, origin, energy_kwh)
        power = self._linked(chassis, "Power")
        for control in power.get("PowerControl", []) if power is not None else []:
            watts = _number(control.get("PowerConsumedWatts"))
            if watts is not None:
                origin = f"{_link(chassis, 'Power')} PowerConsumedWatts"
                return PowerSample(watts, name, origin, energy_kwh)
        subsystem = self._linked(chassis, "PowerSubsystem")
        if subsystem is not None:
            supplies = self._linked(subsystem, "PowerSupplies")
            readings = []
            for supply in supplies.get("Members", []) if supplies is not None else []:
                metrics = self._linked(self.get(supply["@odata.id"]), "Metrics")
                if metrics is not None:
                    readings.append(_reading(metrics.get("InputPowerWatts")))
            known = [r for r in readings if r is not None]
            if known:
                origin = f"{_link(chassis, 'PowerSubsystem')} PowerSupplies InputPowerWatts"
                return PowerSample(sum(known), name, origin, energy_kwh)
        return None

    def _linked(self, resource: Mapping[str, Any], key: str) -> dict[str, Any] | None:
        """The resource ``key`` links to; None if there is no link or it is not found (a
        BMC may link what it does not serve)."""
        link = _link(resource, key)
        if link is None:
            return None
        try:
            return self.get(link)
        except RedfishError as exc:
            if exc.status == 404:
                return None
            raise


def _link(resource: Mapping[str, Any], key: str) -> str | None:
    value = resource.get(key)
    if isinstance(value, Mapping) and isinstance(value.get("@odata.id"), str):
        return str(value["@odata.id"])
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value >= 0 else None


def _reading(excerpt: Any) -> float | None:
    return _number(excerpt.get("Reading")) if isinstance(excerpt, Mapping) else None


@dataclass
class PollStats:
    polls: int = 0
    failures: int = 0
    last_error: str = ""


class RedfishReader:
    """A PowerSource of one zone, ``platform``, fed by a polling thread (``start``)."""

    source = SOURCE
    capability = "redfish"

    def __init__(
        self,
        client: RedfishClient,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        max_age_s: float | None = None,
        chassis: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"the Redfish interval must be > 0, got {interval_s}")
        self.client = client
        self.interval_s = interval_s
        self.max_age_s = 3 * interval_s + client.timeout_s if max_age_s is None else max_age_s
        self.chassis = chassis
        self.stats = PollStats()
        self._clock = clock
        self._lock = threading.Lock()
        self._total_uj = 0.0  # at _polled_at
        self._watts: float | None = None
        self._polled_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def detect(self) -> PowerStatus:
        """One poll, synchronously: whether the BMC gives a reading, and where from."""
        try:
            sample = self.poll()
        except RedfishError as exc:
            return PowerStatus(False, f"Redfish at {self.client.base}: {exc}")
        detail = (
            f"Redfish at {self.client.base}: chassis {sample.chassis}, {sample.origin} "
            f"({sample.watts:.0f} W), polled every {self.interval_s:g} s, stale after "
            f"{self.max_age_s:g} s"
        )
        if sample.energy_kwh is not None:
            detail += f"; EnergykWh {sample.energy_kwh:g} (not used: too coarse for windows)"
        return PowerStatus(True, detail, (ZONE,))

    def poll(self) -> PowerSample:
        """Read the BMC once and advance the counter; raises RedfishError (counted)."""
        try:
            sample = self.client.power(self.chassis)
        except RedfishError as exc:
            with self._lock:
                self.stats.failures += 1
                self.stats.last_error = str(exc)
            raise
        now = self._clock()
        with self._lock:
            self.stats.polls += 1
            if self._polled_at is not None and self._watts is not None:
                # The hold counts up to the staleness bound, what read() may have handed out;
                # the rest of a gap is unknown and adds nothing.
                held = min(now - self._polled_at, self.max_age_s)
                self._total_uj += self._watts * held * 1e6
            self._watts, self._polled_at = sample.watts, now
        return sample

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="redfish-poll", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.client.timeout_s + 1)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            # a failure is counted in stats; readings go stale and leave the zone out
            with contextlib.suppress(RedfishError):
                self.poll()

    def read(self) -> dict[str, int]:
        """Cumulative µJ of ``platform`` now; PowerUnavailable when the last poll is stale."""
        now = self._clock()
        with self._lock:
            if self._polled_at is None or self._watts is None:
                raise PowerUnavailable(
                    f"no reading from the BMC at {self.client.base} yet ({self.stats.last_error})"
                )
            age = now - self._polled_at
            if age > self.max_age_s:
                raise PowerUnavailable(
                    f"BMC reading at {self.client.base} is {age:.1f} s old (> {self.max_age_s:g} s;"
                    f" {self.stats.failures} failed polls, last: {self.stats.last_error})"
                )
            return {ZONE: round(self._total_uj + self._watts * age * 1e6)}


@dataclass(frozen=True)
class RedfishConfig:
    """The agent's --redfish-* options."""

    url: str
    credentials: Path | None = None
    interval_s: float = DEFAULT_INTERVAL_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_age_s: float | None = None  # None: 3 intervals + one timeout
    insecure: bool = False
    ca_file: Path | None = None
    chassis: str | None = None

    def reader(self) -> RedfishReader:
        client = RedfishClient(
            self.url,
            load_credentials(self.credentials),
            timeout_s=self.timeout_s,
            insecure=self.insecure,
            ca_file=self.ca_file,
        )
        return RedfishReader(
            client, interval_s=self.interval_s, max_age_s=self.max_age_s, chassis=self.chassis
        )
