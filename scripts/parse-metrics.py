#!/usr/bin/python3
"""Validates a mailherd /metrics exposition (read from stdin) and prints it as JSON.

Uses the reference parsers of Debian's python3-prometheus-client: the
OpenMetrics parser, which is strict (it refuses a missing `# EOF`, a bad
name, suffix or bucket order), and the Prometheus text parser, which is what
older scrapers use. Exit 1 with the parser's message if either refuses it.

Output: {"families": {NAME: {"type": T, "unit": U, "samples": [{"name": N,
"labels": {...}, "value": V}]}}} with the OpenMetrics family names (a
counter `mailherd_failovers` has samples `mailherd_failovers_total`).

Usage: curl -s http://NODE:7401/metrics | scripts/parse-metrics.py
"""

import json
import math
import sys

try:
    from prometheus_client.openmetrics.parser import (
        text_string_to_metric_families as openmetrics_families,
    )
    from prometheus_client.parser import text_string_to_metric_families as text_families
except ImportError as error:
    sys.exit(f"parse-metrics: {error}: install python3-prometheus-client (scripts/install-deps.sh)")


def value(number):
    """JSON has no NaN or infinities: those become strings."""
    return number if math.isfinite(number) else str(number)


def main():
    text = sys.stdin.read()
    families = {}
    try:
        for family in openmetrics_families(text):
            families[family.name] = {
                "type": family.type,
                "unit": family.unit,
                "samples": [
                    {"name": s.name, "labels": s.labels, "value": value(s.value)}
                    for s in family.samples
                ],
            }
        # The Prometheus text parser must read it too (it sees the
        # OpenMetrics-only lines, `# UNIT` and `# EOF`, as comments).
        for _ in text_families(text):
            pass
    except Exception as error:  # the parsers raise ValueError and others
        sys.exit(f"parse-metrics: not a valid exposition: {error}")
    json.dump({"families": families}, sys.stdout)


main()
