"""Phase-space definitions: where generated tracks start and which leg they travel.

A phase space is data, a TOML file (see ``search_spaces/phase_spaces/default.toml`` and
``classic.toml`` shipped with the package). Select one by name (``default``, ``classic``) or by
path.
Units: x, y, z in mm, slopes dimensionless, momentum in GeV (converted to q/p in 1/MeV).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raytrack.configs import shipped_file, shipped_names
from raytrack.files import read_toml
from raytrack.physics.units import MEV_PER_GEV

DISTRIBUTIONS = ("uniform", "log-uniform", "fixed")
STATE_KEYS = ("x", "y", "tx", "ty", "p_gev")
DIRECTIONS = ("forward", "backward", "both")


class PhaseSpaceError(ValueError):
    """A phase-space file is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class Distribution:
    kind: str
    low: float
    high: float

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        u = rng.random(n)
        if self.kind == "uniform":
            return self.low + (self.high - self.low) * u
        if self.kind == "log-uniform":
            return np.exp(np.log(self.low) + (np.log(self.high) - np.log(self.low)) * u)
        return np.full(n, self.low)


@dataclass(frozen=True)
class PhaseSpace:
    """Start-state distributions and the leg (fixed z_start -> z_end, or variable)."""

    name: str
    source: dict[str, Any]  # the parsed file, kept verbatim for the manifest
    state: dict[str, Distribution]
    charges: tuple[int, ...]
    z_start: float | None = None  # fixed leg
    z_end: float | None = None
    z_min: float | None = None  # variable legs
    z_max: float | None = None
    dz_abs: Distribution | None = None
    direction: str = "both"

    @property
    def fixed_leg(self) -> bool:
        return self.z_start is not None

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """Draw n start states and legs: columns x, y, tx, ty, qop (1/MeV), z_start, z_end."""
        out = {key: self.state[key].sample(rng, n) for key in ("x", "y", "tx", "ty")}
        p_mev = self.state["p_gev"].sample(rng, n) * MEV_PER_GEV
        charge = rng.choice(np.asarray(self.charges, dtype=np.float64), size=n)
        out["qop"] = charge / p_mev
        out["z_start"], out["z_end"] = self._sample_legs(rng, n)
        return out

    def _sample_legs(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self.fixed_leg:
            return np.full(n, self.z_start), np.full(n, self.z_end)
        dz = self.dz_abs.sample(rng, n)
        if self.direction == "both":
            dz = np.where(rng.random(n) < 0.5, dz, -dz)
        elif self.direction == "backward":
            dz = -dz
        # z_start uniform over the positions where the whole leg stays inside [z_min, z_max].
        lo = self.z_min + np.maximum(0.0, -dz)
        hi = self.z_max - np.maximum(0.0, dz)
        z_start = lo + (hi - lo) * rng.random(n)
        return z_start, z_start + dz


def load_phase_space(name_or_path: str | Path) -> PhaseSpace:
    """Load a built-in phase space by name, or a TOML file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = shipped_file("phase space", str(name_or_path))
        if path is None:
            builtins = shipped_names("phase space")
            raise PhaseSpaceError(
                f"unknown phase space {str(name_or_path)!r}: use one of {builtins} or a .toml file"
            )
    data = read_toml(path, PhaseSpaceError, "phase-space")
    return parse_phase_space(data, origin=str(path))


def parse_phase_space(data: dict[str, Any], origin: str = "<phase space>") -> PhaseSpace:
    """Validate a parsed phase-space document; errors name ``origin`` and the key at fault."""
    known = {"name", "description", "charge", "leg", *STATE_KEYS}
    unknown = sorted(set(data) - known)
    if unknown:
        raise PhaseSpaceError(f"{origin}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise PhaseSpaceError(f"{origin}: key 'name' must be a non-empty string")
    state = {key: _distribution(data, key, origin) for key in STATE_KEYS}
    if state["p_gev"].low <= 0:
        raise PhaseSpaceError(f"{origin}: key 'p_gev.low' must be positive (momentum in GeV)")
    charges = _charges(data, origin)
    leg = _leg(data, origin)
    return PhaseSpace(name=name, source=data, state=state, charges=charges, **leg)


def _distribution(table: dict[str, Any], key: str, origin: str, prefix: str = "") -> Distribution:
    name = f"{prefix}{key}"
    where = f"{origin}: key '{name}'"
    spec = table.get(key)
    if not isinstance(spec, dict):
        raise PhaseSpaceError(f"{where} is missing or not a table (needs distribution, low, high)")
    kind = spec.get("distribution")
    if kind not in DISTRIBUTIONS:
        raise PhaseSpaceError(
            f"{origin}: key '{name}.distribution' must be one of {list(DISTRIBUTIONS)}, "
            f"got {kind!r}"
        )
    if kind == "fixed":
        value = _number(spec, "value", f"{prefix}{key}", origin)
        return Distribution(kind, value, value)
    low = _number(spec, "low", f"{prefix}{key}", origin)
    high = _number(spec, "high", f"{prefix}{key}", origin)
    if not low < high:
        raise PhaseSpaceError(f"{where}: needs low < high, got low={low}, high={high}")
    if kind == "log-uniform" and low <= 0:
        raise PhaseSpaceError(f"{where}: a log-uniform range needs low > 0, got {low}")
    return Distribution(kind, low, high)


def _number(table: dict[str, Any], key: str, parent: str, origin: str) -> float:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise PhaseSpaceError(
            f"{origin}: key '{parent}.{key}' must be a finite number, got {value!r}"
        )
    return float(value)


def _charges(data: dict[str, Any], origin: str) -> tuple[int, ...]:
    values = data.get("charge", {}).get("values") if isinstance(data.get("charge"), dict) else None
    if not isinstance(values, list) or not values or any(v not in (-1, 1) for v in values):
        raise PhaseSpaceError(
            f"{origin}: key 'charge.values' must be a non-empty list of -1 and/or 1"
        )
    return tuple(int(v) for v in values)


def _leg(data: dict[str, Any], origin: str) -> dict[str, Any]:
    leg = data.get("leg")
    if not isinstance(leg, dict):
        raise PhaseSpaceError(
            f"{origin}: key 'leg' is missing: give z_start and z_end, or z_min, z_max and dz_abs"
        )
    if "z_start" in leg or "z_end" in leg:
        extra = sorted(set(leg) - {"z_start", "z_end"})
        if extra:
            raise PhaseSpaceError(f"{origin}: key 'leg' mixes a fixed leg with {extra}")
        return {
            "z_start": _number(leg, "z_start", "leg", origin),
            "z_end": _number(leg, "z_end", "leg", origin),
        }
    unknown = sorted(set(leg) - {"z_min", "z_max", "dz_abs", "direction"})
    if unknown:
        raise PhaseSpaceError(f"{origin}: unknown key(s) {['leg.' + k for k in unknown]}")
    z_min = _number(leg, "z_min", "leg", origin)
    z_max = _number(leg, "z_max", "leg", origin)
    dz_abs = _distribution(leg, "dz_abs", origin, prefix="leg.")
    direction = leg.get("direction", "both")
    if direction not in DIRECTIONS:
        raise PhaseSpaceError(
            f"{origin}: key 'leg.direction' must be one of {list(DIRECTIONS)}, got {direction!r}"
        )
    if dz_abs.low < 0 or dz_abs.high > z_max - z_min:
        raise PhaseSpaceError(
            f"{origin}: key 'leg.dz_abs' must lie within [0, z_max - z_min] = [0, {z_max - z_min}]"
        )
    return {"z_min": z_min, "z_max": z_max, "dz_abs": dz_abs, "direction": direction}
