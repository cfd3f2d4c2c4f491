"""Where a run's time went: its steps (from Dagster's step events) and what lies outside them."""

import dagster as dg

STEP_EVENTS = {
    dg.DagsterEventType.STEP_START,
    dg.DagsterEventType.STEP_SUCCESS,
    dg.DagsterEventType.STEP_FAILURE,
}


def latest_run_split(instance: dg.DagsterInstance, wall_s: float) -> dict:
    """Seconds per step of the instance's latest run, the run's own span, and `outside_run_s`: the
    stage's wall time before and after the run (imports, definitions, registry and reclaim, summaries)."""
    runs = instance.get_runs(limit=1)
    if not runs:
        return {}
    started, steps, first, last = {}, {}, None, None
    for entry in instance.all_logs(runs[0].run_id):
        event = entry.dagster_event
        first = entry.timestamp if first is None else first
        last = entry.timestamp
        if event is None or event.event_type not in STEP_EVENTS:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            started[event.step_key] = entry.timestamp
        elif event.step_key in started:
            steps[event.step_key] = round(entry.timestamp - started[event.step_key], 3)
    span = (last - first) if first is not None else 0.0
    return {
        "steps": steps,
        "run_s": round(span, 3),
        "between_steps_s": round(span - sum(steps.values()), 3),
        "outside_run_s": round(wall_s - span, 3),
    }
