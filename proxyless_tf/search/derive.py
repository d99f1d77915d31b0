"""The search's last stage: the network the run keeps, from α and the latency table.

`derive(...)`: α's argmax, then the configured derivation: the latency-aware edit into the
target band (`SuperNet.derive_arch`), or the supernet's best of N networks drawn in the band
(`--derive_samples`, `sampled_derivation`), either of them corrected by measuring the derived
networks on the device (`--derive_measure`, `derive_on_device`).
"""

from proxyless_tf.search.inputs import reference_arch


def derive(cfg, net, data, table, lat_nc, target, measurer=None, chief=True):
    """(arch, argmax_arch, measured, sampled): the derived and the argmax network, the
    `derive_on_device` rounds (or None) and the scored candidates of the kept pick (or None).

    Only the chief measures: the other workers' arch.json is a side copy, and workers sharing a
    host would time each other's interpreters. Every worker draws the same samples (same seed)."""
    argmax_arch = net.derive_arch()
    ceiling = cfg.derive_mode == "ceiling"
    pick, ranked_by_pick = None, {}
    if cfg.derive_samples:
        from proxyless_tf.search import sampled_derivation

        def pick(table_target, tolerance):
            arch, ranked = sampled_derivation.pick(net, data, cfg.derive_samples, cfg.derive_proposal, cfg.seed,
                                                   table_target, tolerance, cfg.bn_recalibration_steps, ceiling)
            ranked_by_pick[tuple(arch.ops)] = ranked
            return arch
    measured = None
    if measurer is not None and chief:
        arch, measured = derive_on_device(net, table, measurer, lat_nc, target, cfg, pick)
    elif pick is not None:
        arch = pick(target, cfg.derive_tolerance)
    elif cfg.derive_tolerance:
        arch = net.derive_arch(target_ms=target, tolerance=cfg.derive_tolerance, ceiling=ceiling)
    else:
        arch = argmax_arch
    return arch, argmax_arch, measured, ranked_by_pick.get(tuple(arch.ops))


def derive_on_device(net, table, backend, num_classes, target, cfg, pick=None):
    """`--derive_measure`: the table-based derivation, corrected by measuring the derived networks.

    Returns (arch, (measured_ms, rounds, the target on the device's clock)); each measurement
    is printed as it is made. `pick`: table_target, tolerance -> arch, the derivation of each round
    instead of the argmax's table edits (`--derive_samples`: the supernet's best of the networks
    drawn in that round's band, so a correction redraws in the corrected band rather than editing
    the scored network; its first measurement in `[sampled]` was +15.6 % off, which edits would
    have fixed by α's choices). With `--measured_reference` the target is that network's first
    time, and each derived network's time is scaled by first/now of the reference timed right after
    it (rounds keep both raw times): the band test is then the ratio of two networks timed
    together, whatever the first time's own noise.
    """
    from absl import logging

    from proxyless_tf.models import nets
    from proxyless_tf.latency.measured_derivation import derive_measured

    logging.set_verbosity(logging.WARNING)  # each conversion's INFO page would bury the rounds' lines
    ceiling = cfg.derive_mode == "ceiling"
    on_device = cfg.measured_target_ms or target

    def derive(table_target, tolerance):
        arch = (pick(table_target, tolerance) if pick is not None else
                net.derive_arch(target_ms=table_target, tolerance=tolerance, ceiling=ceiling))
        predicted[tuple(arch.ops)] = table.predict(net.latency_arch(arch), num_classes)
        return arch, predicted[tuple(arch.ops)]

    def time_ms(arch):
        return float(getattr(backend.measure(nets.build_model(net.latency_arch(arch), num_classes)),
                             table.statistic))

    reference, raw, predicted = None, {}, {}
    if cfg.measured_reference:
        reference = reference_arch(cfg, net.space)
        on_device = time_ms(reference)
        print(f"derive_measure: reference {cfg.measured_reference} measured {on_device:.4g} ms (the target)",
              flush=True)

    def measure(arch):
        ms = seen = time_ms(arch)
        line = f"measured {seen:.4g} ms"
        if reference is not None:  # right after: what moved the reference since its first time moved this one
            now = time_ms(reference)
            raw[tuple(arch.ops)] = {"raw_ms": seen, "reference_ms": now}
            ms = seen * on_device / now
            line += f", reference {now:.4g} ms: {ms:.4g} ms on the target's clock"
        print(f"derive_measure: {line} ({(ms - on_device) / on_device * 100:+.1f}% vs target "
              f"{on_device:.4g} ms; table predicts {predicted[tuple(arch.ops)]:.4g})",
              flush=True)
        return ms

    arch, ms, rounds = derive_measured(derive, measure, on_device, cfg.derive_tolerance, ceiling,
                                       table_target_ms=target)
    for r in rounds:
        r.update(raw.get(tuple(r["ops"]), {}))
    return arch, (ms, rounds, on_device)
