"""python -m raytrack.bench: throughput and accuracy, as ratios against a baseline timed in the
same run (machines are shared and noisy: only a ratio measured side by side means something).

    python -m raytrack.bench generate [--tracks 200000] [--baseline-tracks 20]

``generate``: tracks/s on one CPU core for :func:`raytrack.physics.propagate` on the classic leg (z
3000 -> 7000 mm) and on the variable legs of the default phase space, against a per-track scalar RK4
loop with 10 mm steps (the textbook method), and the ratio. The accuracy of the run
against an integration 1000 times tighter is printed beside it. Then, on the same variable-leg
tracks, plain ``propagate`` (steps <= 1000 mm) against the 250 mm step cap that the Jacobian needs,
taking turns, and ``propagate`` with the transport Jacobian (``return_jacobian=True``, what
``python -m raytrack.generate --jacobian`` runs) against without it: the two take turns, three
times, each keeps its best time, and the ratio is printed. With a CUDA device, the same propagations
on the GPU are measured too.

    python -m raytrack.bench train [--preset small] [--tracks 100000] [--epochs 2] [--device cpu]

``train``: training samples/s of a preset (its default formulation, on default-phase-space
tracks) with raytrack's fast path (features prepared once, data on the device once, shuffled by
one gather per epoch) and with a plain ``TensorDataset`` + ``DataLoader(batch_size=512,
shuffle=True)`` loop (the plain PyTorch loop) on the same features and targets, same model,
same AdamW settings, and the ratio. Both at batch 512; the fast path also at its default batch.

    python -m raytrack.bench infer [--tracks 8192] [--presets NAME ...]

``infer``: tracks/s on one CPU core of each exported preset (ONNX Runtime and torch, batch 1 and
batch 4096) against ``propagate`` on the same default-phase-space tracks, and the ratio. Beside
each model: its formulation alone (``model.prepare``: the physics base and features), as a share
of the torch model's time, and the same network with ``base="line", inputs="state"`` (no physics),
as a speed ratio to the default formulation: what the physics costs.

    python -m raytrack.bench accuracy [--samples 200000] [--preset small] [--budget 120]

``accuracy``: generates a default-phase-space dataset with ``python -m raytrack.generate`` into a
temporary directory, trains the preset for ``--budget`` seconds and reports the test split's
mean and P95 position error, overall and by |dz|, beside the straight line's.

    python -m raytrack.bench deploy [--preset trigger] [--budget 90] [--tracks 4096] [RUN_DIR ...]

``deploy``: each model against the integrator at equal accuracy, in Python and in C++. For each
model (of each RUN_DIR, on its dataset's field and phase space; without one, ``--preset`` trained
here for ``--budget`` seconds on ``--samples`` tracks of the default dipole and of the window-frame
test map of :mod:`raytrack.physics.synthetic_map`): its mean and P95 position error on ``--tracks``
fresh tracks (truth: ``propagate`` 1000 times tighter), those of ``propagate`` at every integrator
setting (``--tolerances`` x ``--step-caps``), and the fastest setting at least as accurate on both.
Then one table, one core: Python, ONNX Runtime and torch (batches of 4096) against ``propagate`` at
that setting; C++ (``-O3 -march=native``), the trigger header's ``predict`` and
``predict_with_jacobian`` one track a call against a C++ Dormand-Prince with ``propagate``'s
tableau, step control and field, one track a call, at its own fastest setting at least as accurate.
How far the C++ integrator agrees with ``propagate`` is printed. Under ten minutes on 2 CPU cores.

    python -m raytrack.bench all [--device cpu] [--search auto]

``all``: every benchmark above but ``deploy`` (ten minutes of its own), with smaller sizes (options
``--generate-tracks``, ``--train-tracks``, ``--infer-tracks``, ``--accuracy-samples``, ...), then
one table with every figure. On a GPU (``--device cuda``) it also runs a small
``python -m raytrack.tune --search all`` with fractional GPUs and reports its best validation
figures and wall time. About 3 minutes on 2 CPU cores; at most 10 on a GPU node."""

from __future__ import annotations

from raytrack.bench import cli


def main(argv: list[str] | None = None) -> int:
    """``python -m raytrack.bench ARGS``; this docstring's module text is its ``--help``."""
    return cli.main(argv, description=__doc__)
