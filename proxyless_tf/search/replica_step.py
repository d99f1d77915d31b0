"""The search step under a `tf.distribute` strategy (Mirrored, MultiWorkerMirrored).

Why it is not the one-device step: that step applies the weight optimizer per layer inside
a `tf.switch_case` on the sampled op (so unsampled ops' weights and slots never move) and
the architecture step inside a `tf.cond`. Under a strategy, `optimizer.apply` in replica
context synchronises the replicas with `merge_call` (all-reduce, then the update of every
copy in cross-replica context), and TensorFlow refuses a `merge_call` inside control flow
("merge_call called while defining a new graph or a tf.function ... control flow statement
which contains a synchronization point"): each replica thread builds its own branch graph,
and the merge function cannot use tensors of several branch graphs.

So the synchronisation points are hoisted out of the control flow, and the control flow is
moved to where no synchronisation happens:

    replica context (each replica: its slice of the global batch)
      1. sample one path per layer (the SeedGenerator state is a mirrored variable updated
         locally, so every replica draws the same paths)
      2. gradients of the weight loss / num_replicas (`SuperNet.weight_loss`: the sampled
         path's CE, plus the sandwich's fixed paths when there is one; a hand-written mean: the
         SUM all-reduce then gives the gradient of the global-batch mean, as on one device)
      3. all-reduce SUM, at the top level
    one merge_call -> cross-replica context (no synchronisation inside: control flow is fine)
      4. weight decay + `optimizer.update_step` through `strategy.extended.update` on every
         copy — what Keras' own TF optimizer does inside its merge_call — for the shared
         weights and the sandwich paths' ops always and, per layer, for the rest of the sampled
         op: its own weights inside a `tf.switch_case`, the kernels nested candidates share inside
         one `tf.cond` (`SuperNet.weight_update_groups`, `apply_groups`, as on one device)
    replica context
      5. if an architecture step is due (`tf.cond`, no synchronisation inside): sample pairs,
         forward on the validation slice, gradients of the arch loss / num_replicas in α
      6. all-reduce SUM of the α gradients (always; zeros when no arch step: a few floats)
    one merge_call
      7. inside `tf.cond`: the α optimizer's update on every copy, its step counter, the
         pair rescale of `MixedOp.rescale` (mode `two`)

Proxyless-R (`reinforce`) replaces 5–7: inside `tf.cond` each replica runs the update's K
draws (the same on every replica) on its validation slice and counts correct predictions;
the counts, slice sizes and latencies are summed across replicas outside it; every replica
then computes the same rewards and α gradients (`SuperNet.reinforce_gradients`), and one
merge_call applies them and moves the reward baseline on every copy.

The learning rate and step counter follow the one-device step: every update of a step
sees the same schedule point and the counter advances once. Batch-norm statistics are
per replica (as in the official PyTorch code under DataParallel); the moving averages
each replica keeps are its own. Gradient clipping, EMA, loss scaling and gradient
accumulation are not applied on this path: a strategy run with them is refused.
"""

import tensorflow as tf

from proxyless_tf.errors import ConfigError
from proxyless_tf.search.weight_step import apply_segments, refuse_optimizer_options

SUM = tf.distribute.ReduceOp.SUM


UNAPPLIED = ("clipnorm", "clipvalue", "global_clipnorm", "use_ema", "loss_scale_factor", "gradient_accumulation_steps")


def check_optimizer(opt, which):
    refuse_optimizer_options(opt, which, UNAPPLIED, "the distributed search step",
                             "drop it, or search without --strategy")


def _local(value):
    """This worker's first replica's copy of a value that is identical on every replica."""
    return tf.distribute.get_strategy().experimental_local_results(value)[0]


def _update(strategy, opt, grads, variables, lr):
    """Weight decay then `opt.update_step` on every copy of every variable (cross-replica)."""
    for g, v in zip(grads, variables):
        if g is None:
            continue
        if opt.weight_decay is not None and opt._use_weight_decay(v):
            def decay(var):
                var.assign_sub(var * tf.cast(opt.weight_decay, var.dtype) * tf.cast(lr, var.dtype))

            strategy.extended.update(v.value, decay, group=False)
        strategy.extended.update(v.value, lambda var, grad: opt.update_step(grad, var, lr), args=(g,),
                                 group=False)


def _apply_weights(strategy, net, grads, wvars, samples):
    """Cross-replica: by `SuperNet.weight_update_groups` — shared weights and the sandwich paths'
    ops always; of each layer the rest of the sampled op's weights and slots."""
    opt = net.optimizer
    lr = tf.identity(opt.learning_rate)  # the schedule at this step, for every update below
    grad_of = {id(v): g for g, v in zip(grads, wvars)}
    always, per_layer = net.weight_update_groups(wvars)
    _update(strategy, opt, [grad_of[id(v)] for v in always], always, lr)
    for k, (m, groups, index) in enumerate(zip(net.mixed_ops, per_layer, samples)):
        update = lambda vs: _update(strategy, opt, [grad_of[id(v)] for v in vs], vs, lr)  # noqa: E731
        net.apply_groups(groups, _local(index), m.num_candidates, update)
        apply_segments(opt, m.bn_segments(), [_local(index)] + [path[k] for path in net.sandwich_paths], update)
    opt.iterations.assign_add(1)


def _apply_all(strategy, net, grads, wvars):
    """Cross-replica, `full` mode: every op ran, every weight is updated."""
    opt = net.optimizer
    _update(strategy, opt, grads, wvars, tf.identity(opt.learning_rate))
    opt.iterations.assign_add(1)


def _apply_arch(strategy, net, grads, pairs, do_arch, baseline=None):
    """Cross-replica, when an arch step ran: the α optimizer's step, then the pair rescale (mode
    `two`) or the REINFORCE moving baseline and its step count (`baseline`, the same on every replica)."""
    opt = net.arch_optimizer
    alphas = net.arch_variables

    def step():
        before = [tf.identity(a.value) for a in alphas] if net.mode == "two" else None
        _update(strategy, opt, grads, alphas, tf.identity(opt.learning_rate))
        opt.iterations.assign_add(1)
        if net.mode == "two":
            for m, pair, b in zip(net.mixed_ops, pairs, before):
                m.rescale(b, _local(pair))
        if baseline is not None:
            net.reward_baseline.assign(_local(baseline))
            net.reward_steps.assign_add(1)
        return tf.constant(0)

    tf.cond(_local(do_arch), step, lambda: tf.constant(0))


def _gradient_arch_step(net, ctx, x_val, y_val, do_arch):
    """Binary-gate (two), full_v2 or full step of α: per-replica gradients, one all-reduce, one update."""
    n = ctx.num_replicas_in_sync
    alphas = net.arch_variables

    def arch_grads():
        samples = [m.sample(net.mode) for m in net.mixed_ops]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch([a.value for a in alphas])
            out = net._forward(x_val, True, net.mode, samples)
            loss = net.arch_loss(net._ce(y_val, out), net.arch_latency(samples))
            scaled = loss / n  # inside the tape, or it has no gradient
        g = tape.gradient(scaled, [a.value for a in alphas])
        net._metric("arch_loss").update_state(loss)
        pair_idx = [p[0] if net.mode == "two" else tf.zeros((2,), tf.int32) for p in samples]
        return [tf.convert_to_tensor(v) for v in g], pair_idx

    def no_arch():
        return [tf.zeros_like(a.value) for a in alphas], [tf.zeros((2,), tf.int32) for _ in alphas]

    agrads, pairs = tf.cond(do_arch, arch_grads, no_arch)
    agrads = ctx.all_reduce(SUM, agrads)
    ctx.merge_call(lambda s, g, p, d: _apply_arch(s, net, g, p, d), args=(agrads, pairs, do_arch))


def _reinforce_arch_step(net, ctx, x_val, y_val, do_arch):
    """Proxyless-R under a strategy: every replica runs the same K draws (the SeedGenerator
    state is mirrored) on its slice of the validation batch; the correct counts, batch sizes
    and latencies are summed across replicas outside the `tf.cond` (a synchronisation point),
    so every replica computes the same rewards, baseline and α gradients as one device on the
    whole batch; one merge_call applies them and moves the baseline on every copy."""
    n = ctx.num_replicas_in_sync
    k, layers = net.reinforce_samples, len(net.mixed_ops)

    def rollouts():
        correct, lats, drawn = net.reinforce_rollouts(x_val, y_val)
        return correct, tf.cast(tf.shape(y_val)[0], tf.float32), lats, drawn

    def no_rollouts():  # finite stand-ins (latency 1 ms, not 0: T / 0 would be inf); the update is skipped
        return tf.zeros((k,)), tf.zeros(()), tf.ones((k,)), tf.zeros((k, layers), tf.int32)

    correct, size, lats, drawn = tf.cond(do_arch, rollouts, no_rollouts)
    correct, size, lats = ctx.all_reduce(SUM, [correct, size, lats])
    accs = correct / tf.maximum(size, 1.0)
    grads, rewards, _, b_new, loss = net.reinforce_gradients(accs, lats / n, drawn)

    def metrics():
        net._metric("arch_loss").update_state(loss)
        net._metric("reward").update_state(tf.reduce_mean(rewards))
        net._metric("baseline").update_state(b_new)
        return tf.constant(0)

    tf.cond(do_arch, metrics, lambda: tf.constant(0))
    ctx.merge_call(lambda s, g, b, d: _apply_arch(s, net, g, None, d, baseline=b), args=(grads, b_new, do_arch))


def train_step(net, data):
    """One search step of `SuperNet` `net` in replica context; returns the metrics dict."""
    (x, y), (x_val, y_val) = net.split_search_batch(data)
    ctx = tf.distribute.get_replica_context()
    n = ctx.num_replicas_in_sync
    if net.mode not in ("two", "full", "full_v2", "reinforce"):
        raise ConfigError("<compile>", "mode", f"{net.mode!r} has no distributed step", "search without --strategy")
    check_optimizer(net.optimizer, "weight_optimizer")
    check_optimizer(net.arch_optimizer, "arch_optimizer")

    # ---- weight step
    wmode = "full" if net.mode == "full" else "single"
    samples = net.weight_samples(wmode)
    wvars = net.weight_variables
    with tf.GradientTape() as tape:
        loss, ce, logits = net.weight_loss(x, y, samples, wmode)  # with the sandwich's fixed paths
        scaled = loss / n
    grads = ctx.all_reduce(SUM, tape.gradient(scaled, wvars))
    if wmode == "full":
        ctx.merge_call(lambda s, g: _apply_all(s, net, g, wvars), args=(grads,))
    else:
        ctx.merge_call(lambda s, g, i: _apply_weights(s, net, g, wvars, i), args=(grads, samples))

    # ---- architecture step
    step = net.optimizer.iterations - 1
    do_arch = tf.logical_and(tf.equal(net.arch_enabled, 1), tf.equal(step % net.arch_every, 0))
    if net.mode == "reinforce":
        _reinforce_arch_step(net, ctx, x_val, y_val, do_arch)
    else:
        _gradient_arch_step(net, ctx, x_val, y_val, do_arch)

    def valid_acc():  # after the α update, as on one device: the argmax network of the new α
        net._metric("valid_acc").update_state(y_val, net._forward(x_val, False, "argmax"))
        return tf.constant(0)

    tf.cond(do_arch, valid_acc, lambda: tf.constant(0))

    return net.step_metrics(ce, y, logits)
