"""What every experiment section shares: pydantic settings (unknown keys and inf/nan refused) and the seed range."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # allow_inf_nan=False: .inf and .nan are refused in every float key (a key with a reason to take them would
    # say so itself); YAML writes them easily and they pass gt/le bounds (lr: .inf > 0).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# Seeds reach torch.manual_seed / torch.Generator, which take 64-bit integers.
SEED_RANGE = (-(2**63), 2**63)


def seed_fits(v: int) -> int:
    low, high = SEED_RANGE
    if not low <= v < high:
        raise ValueError("a seed must fit in 64 bits: -2**63 <= seed < 2**63")
    return v
