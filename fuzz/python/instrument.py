"""Selective atheris instrumentation for the Python fuzz targets."""

from __future__ import annotations

import sys


def instrument(module_names: tuple[str, ...]) -> int:
    """Instruments the functions and methods defined in the named modules (and only those:
    ``atheris.instrument_all`` would trace asyncio too and run about six times slower)."""
    import inspect

    import atheris  # type: ignore[import-untyped]

    seen: set[int] = set()
    for name, module in list(sys.modules.items()):
        if module is None or not any(name == m or name.startswith(m + ".") for m in module_names):
            continue
        for obj in list(vars(module).values()):
            members = [obj] if inspect.isfunction(obj) else (
                list(vars(obj).values()) if inspect.isclass(obj) else [])
            for member in members:
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if (inspect.isfunction(member) and member.__module__ == name
                        and id(member) not in seen):
                    seen.add(id(member))
                    atheris.instrument_func(member)
    return len(seen)
