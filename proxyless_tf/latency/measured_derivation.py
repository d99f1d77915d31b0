"""The latency-aware derivation, checked on the device: the table ranks the swaps, a measurement says how far.

A per-block table predicts a whole network only to within its error on that kind of network
(6 % held-out MAPE for this machine's LiteRT table, and 8-22 % off on the networks of the
matched-latency experiment, where the error was systematic for one family of networks and the
table's level also drifted between sessions). A network derived into target +- 5 % *by the
table* therefore misses that band *on the device* — which is where the user's budget is.
When the device can be measured from this process (the LiteRT interpreter on this machine, the
TF runtime here), the derived network is converted and measured; if it misses, the table's
target is moved by that network's measured/predicted ratio (or between two networks measured on
either side of it) and the derivation repeated. The
table still decides which layers to change (cheapest in lost log-probability per ms); the
measurement only corrects where the band is. Direct measurement in the loop is the paper's
premise ("latency measured on the target hardware"), applied where it is cheap: a handful of
whole-network measurements at the end of a search.
"""

from proxyless_tf.errors import ConfigError

MEASURABLE = {"litert": ("threads", "warmup_runs", "num_runs", "rounds", "clock", "round_pause_s"),
              "tf": ("batch_size", "device", "warmup_runs", "num_runs")}


def check_measurable(table, source):
    """Fail before any work when `table`'s device cannot be measured from this process."""
    name = table.device.get("backend")
    if name not in MEASURABLE:
        raise ConfigError(source, "device.backend", f"a {name!r} table's device cannot be measured from here",
                          "drop --derive_measure, or use a table built on this machine with --backend=litert or tf")


def backend_like(table, source):
    """A backend that measures as `table` was measured: same runtime settings, same ms scale
    (clock='ref' tables: the table's reference_ms), refused when this host is not the table's."""
    from proxyless_tf.latency import backends, builder
    from proxyless_tf.latency.validate import check_same_device, device_settings

    check_measurable(table, source)
    name, device = table.device["backend"], device_settings(table)  # an older table: as it was measured
    backend = backends.make_backend(name, **{k: device[k] for k in MEASURABLE[name] if k in device})
    check_same_device(table, backend, source,
                      "build a table on this machine (tools/build_latency_table.py, docs/latency.md) and pass it, "
                      "or run where this table was built")
    builder.adopt_reference(backend, table)
    return backend


def derive_measured(derive, measure, target_ms, tolerance, ceiling=False, max_rounds=5, table_target_ms=None,
                    settle=0.5):
    """The derived network whose *measured* latency is nearest the band, and the rounds that led there.

    Each round after the first aims the table where the measurements say the target lies: once
    networks have been measured on both sides of it, between the nearest two (the secant of
    measured against predicted ms), else at pred x target / measured of the last. Why: the
    table's error differs between networks of one search by several per cent (0.875 and 0.823
    of the measurement for two of them, research/RESULTS.md `[sandwich_ls]` seed 0), so the last
    network's ratio alone can throw the next one past the band, back and forth.

    Args:
        derive: table_target_ms, tolerance -> (arch, predicted_ms); the table-based derivation.
        measure: arch -> measured ms on the device.
        target_ms: the target, on the device's clock.
        table_target_ms: where the first round aims the table (default target_ms): the target
            on the table's clock when the caller knows how the two differ (e.g. a network
            measured and predicted near the target).
        tolerance: the band, a fraction of target_ms; rounds after the first derive into half of
            it (a quarter when half gives a network already measured), so the next measurement
            has room for the table's remaining error.
        ceiling: the target is a budget (only latency above target x (1 + tolerance) misses).
        max_rounds: measurements at most, each of a network not measured before.
        settle: stop early only when a network measures within settle x tolerance of the
            target; one in the band's outer part is kept if nothing nearer follows. Why: the
            band is judged again later by fresh measurements, which move a network by about a
            point (research/RESULTS.md `[kd05]`: −3.9 % when derived, −4.95 % at the end).
    Returns:
        (arch, measured_ms, rounds): rounds is a list of {table_target_ms, predicted_ms,
        measured_ms, ops}, in order.
    """
    def miss(ms):
        err = ms - target_ms
        return max(err, 0.0) if ceiling else abs(err)

    measured = {}  # network -> (arch, measured ms); every round's network is a new one
    table_target = target_ms if table_target_ms is None else table_target_ms
    arch, pred = derive(table_target, tolerance)
    rounds = []
    while True:
        ms = float(measure(arch))
        measured[tuple(arch.ops)] = (arch, ms)
        rounds.append({"table_target_ms": table_target, "predicted_ms": pred, "measured_ms": ms, "ops": list(arch.ops)})
        if miss(ms) <= settle * tolerance * target_ms or len(rounds) >= max_rounds:
            break
        # deriving is free, measuring is not: aim where the measurements point, and take the first
        # aim that gives a network not measured yet (the table's steps are coarse; a secant aim can
        # land on a network at one end of the bracket again)
        points = [(r["predicted_ms"], r["measured_ms"]) for r in rounds]
        tries = ((aim, *derive(aim, tol)) for aim in next_table_targets(points, pred, ms, target_ms)
                 for tol in (tolerance / 2, tolerance / 4))
        fresh = next(((aim, a, p) for aim, a, p in tries if tuple(a.ops) not in measured), None)
        if fresh is None:
            break  # every aim derives a network already measured
        table_target, arch, pred = fresh
    best_key = min(measured, key=lambda k: miss(measured[k][1]))
    return measured[best_key][0], measured[best_key][1], rounds


def next_table_targets(points, pred, ms, target_ms):
    """Where the table should aim next, best first, from the (predicted, measured) ms of the networks so far.

    Bracketed (measured below and above the target): the secant between the nearest network
    below and the nearest above. Then the last network's ratio, pred x target / measured: where
    the table would have to aim for that network's family to measure on target.
    """
    aims = []
    below = [p for p in points if p[1] < target_ms]
    above = [p for p in points if p[1] > target_ms]
    if below and above:
        (p_lo, m_lo), (p_hi, m_hi) = max(below, key=lambda p: p[1]), min(above, key=lambda p: p[1])
        aims.append(p_lo + (target_ms - m_lo) * (p_hi - p_lo) / (m_hi - m_lo))
    aims.append(pred * target_ms / ms)
    return aims
