#!/usr/bin/env python3
"""Print the version from include/vkmoe.h, its one home."""
import pathlib
import re

header = (pathlib.Path(__file__).resolve().parent.parent / "include" / "vkmoe.h").read_text()
parts = [re.search(rf"#define VKMOE_VERSION_{p} (\d+)", header).group(1)
         for p in ("MAJOR", "MINOR", "PATCH")]
print(".".join(parts))
