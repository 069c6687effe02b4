#!/usr/bin/env python3
"""Sums the TRX results of every test suite into one line: N passed, N failed, N skipped."""
import glob
import os
import sys
import xml.etree.ElementTree as ET

results = sys.argv[1]
passed = failed = skipped = 0
ns = {"t": "http://microsoft.com/schemas/VisualStudio/TeamTest/2010"}
for path in sorted(glob.glob(os.path.join(results, "*.trx"))):
    counters = ET.parse(path).getroot().find("t:ResultSummary/t:Counters", ns)
    total = int(counters.get("total", 0))
    p = int(counters.get("passed", 0))
    f = int(counters.get("failed", 0)) + int(counters.get("error", 0)) + int(counters.get("timeout", 0)) + int(counters.get("aborted", 0))
    passed += p
    failed += f
    skipped += max(0, total - p - f)
# A suite whose test host crashed left no TRX: count it as a failure.
failed += len(glob.glob(os.path.join(results, "*.crashed")))
print(f"{passed} passed, {failed} failed, {skipped} skipped")
