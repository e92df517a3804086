"""CPU and memory of each kind of step: Kubernetes quantities, requests and limits."""

from __future__ import annotations

import dataclasses
import re
from types import MappingProxyType

from components.common.errors import InputError

QUANTITY_PATTERNS = MappingProxyType({
    "cpu": re.compile(r"^([0-9]*[.])?[0-9]+m?$"),
    "memory": re.compile(r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$"),
})
MEMORY_UNITS = MappingProxyType({
    "": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
})


def is_quantity(kind: str, text: str) -> bool:
    """Whether ``text`` is a Kubernetes ``cpu`` or ``memory`` quantity (``500m``, ``4Gi``)."""
    return QUANTITY_PATTERNS[kind].match(text) is not None


def amount(kind: str, quantity: str) -> float:
    """Convert a well-formed ``cpu``/``memory`` quantity to cores/bytes (``500m`` -> 0.5)."""
    if kind == "cpu":
        return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)
    number, unit = re.match(r"^([0-9]+)(\D*)$", quantity).groups()
    return float(number) * MEMORY_UNITS[unit]


@dataclasses.dataclass(frozen=True)
class Resources:
    """CPU and memory requests/limits of one kind of step (Kubernetes quantities)."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str

    def validate(self, step: str) -> Resources:
        """Check the quantities' format and that no request exceeds its limit."""
        for kind, example in (("cpu", "500m or 2"), ("memory", "512Mi or 4Gi")):
            request, limit = getattr(self, f"{kind}_request"), getattr(self, f"{kind}_limit")
            for value in (request, limit):
                if not is_quantity(kind, value):
                    raise InputError(f"--{kind} {step}: {value!r} is not a Kubernetes {kind} "
                                     f"quantity (e.g. {example})")
            if amount(kind, request) > amount(kind, limit):
                raise InputError(f"--{kind} {step}: request {request} exceeds limit {limit}")
        return self


# Fit a GKE n1-standard-4 + T4 node (about 3.9 CPU / 12 GiB allocatable) or an e2-standard-4.
DEFAULT_RESOURCES = MappingProxyType({
    "preprocess": Resources("1", "2", "2Gi", "4Gi"),
    "train": Resources("3", "6", "8Gi", "12Gi"),
    "finetune": Resources("3", "6", "8Gi", "12Gi"),
    "evaluate": Resources("1", "2", "2Gi", "4Gi"),
    "select": Resources("250m", "1", "512Mi", "1Gi"),
})
