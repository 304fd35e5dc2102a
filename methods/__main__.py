"""``python -m methods``: table of registered methods and whether they run here."""

from __future__ import annotations

import sys

from .registry import get_method_class, list_methods, plugin_errors


def main(argv=None) -> int:
    pattern = (argv if argv is not None else sys.argv[1:]) or [None]
    rows = [("name", "framework", "devices", "placements", "available", "why not")]
    for name in list_methods(pattern[0]):
        cls = get_method_class(name)
        why = cls.unavailable_reason()
        rows.append((name, cls.framework, ",".join(cls.devices), ",".join(cls.placements or ("any",)),
                     "no" if why else "yes", why))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for name, err in plugin_errors().items():
        print(f"plugin {name!r} failed to load: {err}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
