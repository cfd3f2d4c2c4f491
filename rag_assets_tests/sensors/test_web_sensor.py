"""The website sensor: a registered web source is re-crawled every recheck_minutes, not more often."""

import json
import time

from rag_assets_tests.helpers import write_sources
from rag_assets_tests.sensors.helpers import apply_partition_requests, cursor_of, runs, tick


def test_web_source_gets_a_run_once_its_recheck_interval_has_passed(settings, instance):
    write_sources(
        settings.sources_file,
        [
            {"name": "site", "kind": "web", "start_url": "http://127.0.0.1:9/docs/", "recheck_minutes": 30},
        ],
    )
    apply_partition_requests(instance, tick(settings, instance, "sources_sensor"))

    first = tick(settings, instance, "web_sources_sensor")
    assert runs(first) == []  # the registration run is the first crawl; the clock starts now
    soon = tick(settings, instance, "web_sources_sensor", cursor_of(first))
    assert runs(soon) == []

    an_hour_ago = json.dumps({"site": time.time() - 3600})
    [due] = runs(tick(settings, instance, "web_sources_sensor", an_hour_ago))
    assert due.partition_key == "site" and due.run_key.startswith("site:recheck:")
