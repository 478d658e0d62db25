"""Which runtimes run an artifact: every configured runtime that loads its format and the board has (its inventory
entry's `runtimes`), one variant each. Shared by the exported models' deploy stage and the model files' one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgecam.bench.variant import Variant

if TYPE_CHECKING:
    from edgecam.bench.context import RunContext


def pair_runtimes(ctx: "RunContext", model: str, fmt: str, precision: str, art: Any) -> list[Variant]:
    """One variant per configured runtime that loads `fmt` and the board has, for the artifact `art`."""
    from edgecam.runtimes import runtime_format
    from edgecam.runtimes.base import ANY_FORMAT

    out: list[Variant] = []
    for rspec in ctx.cfg.runtimes:
        if runtime_format(rspec.name) not in (fmt, ANY_FORMAT):
            continue
        if ctx.dspec.runtimes and rspec.name not in ctx.dspec.runtimes:
            ctx.log(f"skipping {rspec.name} on {ctx.dspec.name}: the inventory lists only {', '.join(ctx.dspec.runtimes)}")
            continue
        out.append(Variant(model, fmt, precision, rspec.name, art.directory, art.manifest))
    return out
