import numpy as np
import pytest
import tensorflow as tf

from rdinet_tf import evaluation
from rdinet_tf.architecture import flops
from rdinet_tf import attacks
from rdinet_lite.errors import InputError
from rdinet_tf.exits.policy import ExitPolicy

ALL_OBJECTIVES = ["exit_1", "exit_2", "main", "average", "max_average", "random_average", "routing"]


@pytest.fixture(scope="module")
def trained(digits_model, digits):
    """The clean digits SmallCNN with its policy, and 128 test images."""
    return digits_model, digits.x_test[:128], digits.y_test[:128]


def adaptive_accuracy(model, images, labels):
    return model.exit_policy.predict(model, images).accuracy(labels)


@pytest.mark.parametrize("objective", ALL_OBJECTIVES)
def test_linf_attacks_stay_in_ball_and_range(trained, objective):
    model, images, labels = trained
    weights = [w.numpy().copy() for w in model.weights]
    for method in (attacks.PGD(0.1, 0.03, 3), attacks.fgsm(0.1), attacks.fast_fgsm(0.1),
                   attacks.RandomNoise(0.1)):
        adversarial = attacks.generate(model, images[:32], labels[:32], method, objective,
                                       policy=model.exit_policy, seed=1).numpy()
        assert np.abs(adversarial - images[:32]).max() <= 0.1 + 1e-6
        assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0
    for before, after in zip(weights, model.weights):
        np.testing.assert_array_equal(before, after.numpy())


def test_same_seed_same_result_other_seed_differs(trained):
    model, images, labels = trained
    pgd = attacks.PGD(0.2, 0.05, 2)
    first = attacks.generate(model, images[:16], labels[:16], pgd, "average", seed=3)
    again = attacks.generate(model, images[:16], labels[:16], pgd, "average", seed=3)
    other = attacks.generate(model, images[:16], labels[:16], pgd, "average", seed=4)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.numpy() - other.numpy()).max() > 0


def test_compiled_attack_matches_eager(trained):
    model, images, labels = trained
    pgd = attacks.PGD(0.2, 0.05, 3)
    compiled = attacks.attack_function(model, pgd, "max_average")(images[:16], labels[:16], 5)
    eager = attacks.generate(model, images[:16], labels[:16], pgd, "max_average", seed=5)
    np.testing.assert_allclose(compiled, eager, atol=1e-6)


def test_pgd_is_stronger_than_fgsm_and_noise(trained):
    model, images, labels = trained
    clean = adaptive_accuracy(model, images, labels)
    results = {}
    for method in (attacks.RandomNoise(0.3), attacks.fgsm(0.3), attacks.PGD(0.3, 0.05, 10)):
        adversarial = attacks.generate(model, images, labels, method, "average", seed=0)
        results[method.name] = adaptive_accuracy(model, adversarial, labels)
    assert clean > 0.8
    assert results["pgd"] <= results["fgsm"] <= clean
    assert results["pgd"] < results["random_noise"] - 0.3


def test_unbounded_eps_drives_accuracy_to_zero(trained):
    model, images, labels = trained
    adversarial = attacks.generate(model, images, labels, attacks.PGD(1.0, 0.1, 20), "routing",
                                   policy=model.exit_policy, seed=0)
    assert adaptive_accuracy(model, adversarial, labels) <= 0.03


def test_more_pgd_steps_never_help_the_model(trained):
    model, images, labels = trained
    accuracies = []
    for steps in (2, 5, 20):
        adversarial = attacks.generate(model, images, labels, attacks.PGD(0.15, 0.02, steps), "exit_2", seed=0)
        logits = model.exit_logits(adversarial, [1])[0]
        accuracies.append(float(np.mean(np.argmax(logits, -1) == labels)))
    assert accuracies[1] <= accuracies[0] + 0.02 and accuracies[2] <= accuracies[1] + 0.02


def test_max_average_picks_the_worst_candidate_per_sample(trained):
    model, images, labels = trained
    candidates = [attacks.RandomNoise(0.3).perturb(None, images[:16], labels[:16], [k, 0]) for k in range(3)]
    chosen = attacks.select_max_average(model, candidates, labels[:16]).numpy()
    summed = np.stack([sum(attacks.cross_entropy(labels[:16], z).numpy() for z in model(c)) for c in candidates])
    expected = np.stack(candidates, 1)[np.arange(16), summed.argmax(0)]
    np.testing.assert_array_equal(chosen, expected)


def test_max_average_is_the_selection_of_the_single_exit_attacks(trained):
    model, images, labels = trained
    pgd = attacks.PGD(0.2, 0.05, 3)
    singles = [attacks.generate(model, images[:16], labels[:16], pgd, f"exit_{k + 1}", seed=7) for k in range(3)]
    np.testing.assert_array_equal(
        attacks.generate(model, images[:16], labels[:16], pgd, "main", seed=7), singles[-1])
    np.testing.assert_allclose(
        attacks.select_max_average(model, singles, labels[:16]),
        attacks.generate(model, images[:16], labels[:16], pgd, "max_average", seed=7), atol=1e-6)


def test_report_reuses_single_exit_attacks_for_max_average(trained):
    model, images, labels = trained
    pgd = attacks.PGD(0.2, 0.05, 3)
    reused = evaluation.robustness_report(model, images[:48], labels[:48], [pgd], batch_size=16, progress=False,
                                        objectives=["exit_1", "exit_2", "exit_3", "max_average"], slowdown=False)
    alone = evaluation.robustness_report(model, images[:48], labels[:48], [pgd], batch_size=16, progress=False,
                                       objectives=["max_average"], slowdown=False)
    assert reused.attacks[-1] == alone.attacks[0]


def test_single_exit_attack_runs_only_the_needed_stages(trained):
    model, images, labels = trained
    calls = []
    original = model.stages[2].call
    model.stages[2].call = lambda *a, **kw: calls.append(1) or original(*a, **kw)
    try:
        attacks.generate(model, images[:8], labels[:8], attacks.PGD(0.1, 0.05, 2), "exit_1", seed=0)
        assert calls == []
        attacks.generate(model, images[:8], labels[:8], attacks.PGD(0.1, 0.05, 2), "exit_3", seed=0)
        assert calls
    finally:
        del model.stages[2].call


def test_wrm_moves_towards_higher_loss(trained):
    model, images, labels = trained
    adversarial = attacks.generate(model, images[:32], labels[:32], attacks.WRM(1.0, 10), "main", seed=0)
    clean_loss = tf.reduce_mean(attacks.cross_entropy(labels[:32], model(images[:32])[-1]))
    adversarial_loss = tf.reduce_mean(attacks.cross_entropy(labels[:32], model(adversarial)[-1]))
    assert float(adversarial_loss) > float(clean_loss)
    assert adversarial.numpy().min() >= 0 and adversarial.numpy().max() <= 1


def test_wrm_ascends_the_loss_minus_half_the_squared_l2_transport():
    """A linear loss eps * <c, x>: WRM's Lagrangian eps <c, x> - 0.5 ||x - x0||^2 has gradient eps c - (x - x0),
    so the iterates follow that recursion (step 1/sqrt(t + 2), clipped to [0, 1]) to the point x0 + eps c, not
    to the edge of [0, 1] where the loss alone would take them."""
    rng = np.random.default_rng(0)
    x0 = rng.uniform(0.3, 0.7, (3, 5, 5, 1)).astype(np.float32)
    c = rng.uniform(-0.2, 0.2, x0.shape).astype(np.float32)
    eps, steps = 0.5, 15
    loss = lambda x, _: tf.reduce_sum(c * x, axis=[1, 2, 3])  # noqa: E731
    got = attacks.WRM(eps, steps).perturb(loss, x0, None, [0, 0]).numpy()
    expected = x0.astype(np.float64)
    for t in range(steps):
        expected = np.clip(expected + (eps * c - (expected - x0)) / np.sqrt(t + 2), 0, 1)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(got, x0 + eps * c, atol=1e-4)  # the fixed point, inside [0, 1]


def test_random_average_weighs_the_exits_with_random_convex_weights(trained):
    """The per-sample random_average loss is a combination sum_k w_k CE_k of the exits' cross-entropies: the
    weights recovered by least squares are positive, sum to 1, are not uniform and change with the seed."""
    model, images, labels = trained
    images, labels = images[:32], labels[:32]
    per_exit = np.stack([attacks.cross_entropy(labels, z).numpy() for z in model.exit_logits(images)], axis=1)
    recovered = []
    for seed in ([0, 0], [1, 0], [2, 5]):
        loss = attacks.objective_loss(model, "random_average", seed=seed)(images, labels).numpy()
        weights, residual, *_ = np.linalg.lstsq(per_exit.astype(np.float64), loss, rcond=None)
        np.testing.assert_allclose(per_exit @ weights, loss, rtol=1e-4, atol=1e-5)  # exactly such a combination
        assert np.all(weights > 0) and weights.sum() == pytest.approx(1, abs=1e-4)
        assert np.ptp(weights) > 0.05  # not 1/K each
        recovered.append(weights)
    assert np.ptp(np.stack(recovered), axis=0).max() > 0.05  # each seed draws its own


def test_bad_objectives_and_attacks(trained):
    model, images, labels = trained
    with pytest.raises(InputError, match="unknown attack objective 'exit_9'"):
        attacks.generate(model, images, labels, attacks.fgsm(0.1), "exit_9")
    with pytest.raises(InputError, match="needs an exit policy"):
        attacks.generate(model, images, labels, attacks.fgsm(0.1), "routing")
    with pytest.raises(InputError, match="steps >= 1"):
        attacks.PGD(0.1, 0.01, 0)


def test_robust_calibration_is_at_least_as_robust_as_cost_calibration_within_the_budget(trained, digits):
    model, _, _ = trained
    images, labels = digits.x_val[:96], digits.y_val[:96]  # held-out images, never test
    costs = flops.exit_costs(model)
    budget = (costs[0] + costs[-1]) / 2
    pgd = attacks.PGD(0.2, 0.05, 3)
    robust = evaluation.calibrate_robust(model, images, labels, pgd, budget, batch_size=48, progress=False)
    cost_only = ExitPolicy.calibrate(model, images, "target_cost", target_cost=budget)
    # The same attacks (same seeds and batches) as the calibration made, scored under each policy.
    reports = [evaluation.robustness_report(model, images, labels, [pgd], policy=policy, batch_size=48, progress=False,
                                          objectives=["exit_1", "exit_2", "exit_3", "average", "max_average"],
                                          slowdown=False) for policy in (robust, cost_only)]
    assert reports[0].clean.mflops <= budget
    assert reports[0].worst_case_ata >= reports[1].worst_case_ata
    with pytest.raises(InputError, match="routing attack depends on the thresholds"):
        evaluation.calibrate_robust(model, images, labels, pgd, budget, objectives=["exit_1", "routing"])
    with pytest.raises(InputError, match="cost of the first exit"):
        evaluation.calibrate_robust(model, images, labels, pgd, costs[0] / 2)


def test_tradeoff_sweeps_cost_and_plots_beside_single_models(trained, digits, tmp_path, monkeypatch):
    model, images, labels = trained
    costs = flops.exit_costs(model)
    targets = [costs[0], (costs[0] + costs[-1]) / 2, costs[-1]]
    pgd = attacks.PGD(0.2, 0.05, 2)
    made, attack_function = [], attacks.attack_function
    monkeypatch.setattr(attacks, "attack_function", lambda *args: made.append(args[2]) or attack_function(*args))
    curve = evaluation.tradeoff(model, digits.x_val, images[:48], labels[:48], pgd, targets, batch_size=48,
                              progress=False)
    monkeypatch.undo()
    # The attacks that follow the thresholds are made for each policy: exit hijack where a side exit is open.
    open_side_exit = [ExitPolicy(p.thresholds).has_open_side_exit for p in curve]
    assert made.count("routing") == 3 and made.count("exit_hijack") == sum(open_side_exit) >= 1
    # Calibrated on held-out images, each policy's cost on the test images is near its target.
    assert [abs(p.mflops - t) < (costs[-1] - costs[0]) / 4 for p, t in zip(curve, targets)] == [True] * 3
    assert curve[0].mflops < curve[1].mflops < curve[2].mflops
    assert all(p.worst_case_ata <= p.accuracy for p in curve)
    # A point scores its policy as the robustness report does (same attacks and seeds, the attacks that follow
    # the policy included).
    report = evaluation.robustness_report(model, images[:48], labels[:48], [pgd],
                                          policy=ExitPolicy(curve[1].thresholds), batch_size=48, progress=False,
                                          slowdown=False)
    assert {"pgd routing", "pgd exit_hijack"} <= {r.name for r in report.attacks}
    assert curve[1] == evaluation.TradeoffPoint.from_report(curve[1].label, report)
    single_exit = evaluation.TradeoffPoint("single-exit", costs[-1], 9.0, 0.9, 0.5)
    figure = evaluation.plot_tradeoff({"RDI": curve}, [single_exit], path=tmp_path / "plots" / "tradeoff.png")
    written = tmp_path / "plots" / "tradeoff.png"
    assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (written.stat().st_mode & 0o777) == 0o644
    assert [len(axis.lines) for axis in figure.axes] == [2, 2]
    assert sorted(p.name for p in written.parent.iterdir()) == ["tradeoff.png"]
    with pytest.raises(InputError, match="unknown FLOPs convention"):
        evaluation.plot_tradeoff({"RDI": curve}, convention="macs")
