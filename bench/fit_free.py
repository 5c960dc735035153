"""The closed-form methods (lightning_modules/fit_free/) against reference-style solvers, on CPU.

Three markdown tables, each method and its reference side by side in one run:

* **GANSpace**: ``streaming_pca`` after float64 accumulation of ``sum x`` and ``sum x x^T`` over
  batches (the project) against scikit-learn's ``IncrementalPCA.partial_fit`` over the same
  batches (the GANSpace reference). Data: a fixed "mapping-like" distribution in d = 512,
  ``x = tanh(z A) B + c``, z ~ N(0, I), with B's rows scaled down geometrically so that the
  spectrum decays; batches of ``--batch`` drawn from a seeded generator, identical for both.
  Only the updates are timed (plus the project's final solve), not the sampling. Each variant
  runs in a fresh 'spawn' subprocess; its memory is the growth of the peak RSS (ru_maxrss) over
  a baseline taken there after the imports and the first batch (so: what the method holds
  beyond one batch of input). Agreement: min over the top 10 components of |cos|.
* **InterFaceGAN**: ``linear_svm`` (squared hinge, L-BFGS) against ``SVC(kernel="linear",
  C=1)``, on a planted attribute with label noise (x ~ N(0, I), label = x.n + 0.3 noise > 0,
  70/30 split), and on the set InterFaceGAN fits: the 2% top and 2% bottom by score.
* **SeFa**: ``sefa_directions`` on a random weight the size of StyleGAN2-1024's stacked style
  affines (config-f), median of 5 runs after one untimed; and the reference's
  ``numpy.linalg.eig`` of A^T A (float32, unsorted), with whether its first vector is the top.

Run from the repository root (SVC at 20,000 samples takes minutes; progress goes to stderr):

    .venv/bin/python bench/fit_free.py
    .venv/bin/python bench/fit_free.py --quick
    .venv/bin/python bench/fit_free.py --only sefa --threads 2

A benchmark, not a test: nothing under tests/ imports it.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: the project is not installed
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
import torch  # noqa: E402

# Imported here, before any thread limit is set, so that the limit reaches their BLAS too.
from sklearn.decomposition import IncrementalPCA  # noqa: E402
from sklearn.svm import SVC  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from generators.stylegan2 import default_channels  # noqa: E402
from lightning_modules.fit_free.ganspace import PROBE_SAMPLES, add_moments, streaming_pca  # noqa: E402
from lightning_modules.fit_free.interfacegan import linear_svm  # noqa: E402
from lightning_modules.fit_free.sefa import sefa_directions  # noqa: E402

DIM = 512            # GANSpace's latent size
TOP = 10             # components compared
DATA_SEED, SPLIT_SEED, SEFA_SEED = 0, 1, 2
CHUNK = 1000         # rows sampled at a time, so that sampling adds little to the peak RSS


# ---- subprocesses ----------------------------------------------------------------------------
def _child(fn, threads: int, args: tuple):
    torch.set_num_threads(threads)
    with threadpool_limits(threads):
        return fn(*args)


def in_subprocess(fn, args: tuple, threads: int, label: str, heartbeat: float = 30.0):
    """``fn(*args)`` in a fresh 'spawn' process (one at a time); a line on stderr every
    ``heartbeat`` seconds while it runs."""
    print(f"  {label} ...", file=sys.stderr, flush=True)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        job, start = pool.apply_async(_child, (fn, threads, args)), time.perf_counter()
        while not job.ready():
            job.wait(heartbeat)
            if not job.ready():
                print(f"  {label}: still running, {time.perf_counter() - start:.0f} s",
                      file=sys.stderr, flush=True)
        return job.get()


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def ratio_text(ratio: float) -> str:
    """A speed ratio as ``1,234x``, ``4.3x`` or ``0.075x``."""
    return f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:.1f}x" if ratio >= 1 else f"{ratio:.2g}x"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ---- GANSpace --------------------------------------------------------------------------------
def mapping_like() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed (A, B, c) of x = tanh(z A) B + c: B's rows are orthonormal scaled by 0.985^i, so
    the covariance is close to sum_i 0.39 * 0.97^i q_i q_i^T (a decaying spectrum)."""
    g = torch.Generator().manual_seed(DATA_SEED)
    a = torch.randn(DIM, DIM, generator=g) / DIM ** 0.5
    q, _ = torch.linalg.qr(torch.randn(DIM, DIM, generator=g))
    b = 2.0 * 0.985 ** torch.arange(DIM, dtype=torch.float32)[:, None] * q.T
    return a, b, torch.randn(DIM, generator=g)


def batches(samples: int, batch: int):
    """The batches (views of one reused buffer), the same sequence in every process."""
    a, b, c = mapping_like()
    g = torch.Generator().manual_seed(DATA_SEED + 1)
    x = torch.empty(batch, DIM)
    for start in range(0, samples, batch):
        n = min(batch, samples - start)
        for i in range(0, n, CHUNK):
            z = torch.randn(min(CHUNK, n - i), DIM, generator=g)
            torch.addmm(c, torch.tanh(z @ a), b, out=x[i:i + len(z)])
        yield x[:n]


def ganspace_project(samples: int, batch: int, k: int) -> tuple[float, float, np.ndarray]:
    """(seconds, peak RSS growth MiB, top components): the project's ``add_moments`` (batches
    centred on a fixed mean estimate, float32 products, float64 sums), then ``streaming_pca``."""
    total = torch.zeros(DIM, dtype=torch.float64)
    outer = torch.zeros(DIM, DIM, dtype=torch.float64)
    count, seconds, base, shift = 0, 0.0, None, None
    for x in batches(samples, batch):
        base = base or peak_rss_mib()  # after the first batch: the input is not the method's
        start = time.perf_counter()
        if shift is None:  # GANSpace centres on the mean of a fixed probe batch
            shift = x[:PROBE_SAMPLES].float().mean(0)
        add_moments(total, outer, x, shift)
        count += x.shape[0]
        seconds += time.perf_counter() - start
    start = time.perf_counter()
    components, _, _ = streaming_pca(count, total, outer, k, shift)
    seconds += time.perf_counter() - start
    return seconds, peak_rss_mib() - base, components[:TOP].numpy()


def ganspace_sklearn(samples: int, batch: int, k: int) -> tuple[float, float, np.ndarray]:
    """(seconds, peak RSS growth MiB, top components): ``IncrementalPCA.partial_fit``."""
    ipca = IncrementalPCA(n_components=k, batch_size=batch)
    seconds, base = 0.0, None
    for x in batches(samples, batch):
        base = base or peak_rss_mib()
        array = x.numpy()
        start = time.perf_counter()
        ipca.partial_fit(array)
        seconds += time.perf_counter() - start
    return seconds, peak_rss_mib() - base, ipca.components_[:TOP].astype(np.float64)


def bench_ganspace(args: argparse.Namespace) -> None:
    print(f"## GANSpace: PCA of x = tanh(zA)B + c, d = {DIM}, batches of {args.batch:,}, "
          f"K = {args.components}\n")
    print("| samples | project s | IncrementalPCA s | speed-up | project peak RSS MiB "
          "| IncrementalPCA peak RSS MiB | min top-10 abs cos |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    speedups, agreements = [], []
    for n in args.samples:
        ours = in_subprocess(ganspace_project, (n, args.batch, args.components), args.threads,
                             f"ganspace {n:,}: project")
        ref = in_subprocess(ganspace_sklearn, (n, args.batch, args.components), args.threads,
                            f"ganspace {n:,}: IncrementalPCA")
        cos = np.abs(np.sum(ours[2] * ref[2], 1) / (np.linalg.norm(ours[2], axis=1)
                                                     * np.linalg.norm(ref[2], axis=1)))
        speedups.append(ref[0] / ours[0])
        agreements.append(cos.min())
        print(f"| {n:,} | {ours[0]:.2f} | {ref[0]:.2f} | {ratio_text(speedups[-1])} "
              f"{verdict(speedups[-1] >= 5)} | {ours[1]:.0f} | {ref[1]:.0f} | {cos.min():.4f} "
              f"{verdict(cos.min() >= 0.99)} |")
    speedup, agreement = min(speedups), min(agreements)
    print(f"\ntarget: project >= 5x faster: {verdict(speedup >= 5)} (min {ratio_text(speedup)}); "
          f"top-10 |cos| >= 0.99: {verdict(agreement >= 0.99)} (min {agreement:.4f})\n")


# ---- InterFaceGAN ----------------------------------------------------------------------------
def svm_split(samples: int, dim: int, extremes: bool):
    """(x_train, y_train, x_test, y_test): a planted attribute with label noise, every sample
    labelled by its score's sign, or (``extremes``) the 2% top (1) and bottom (0) by score."""
    g = torch.Generator().manual_seed(DATA_SEED)
    x = torch.randn(samples, dim, generator=g)
    normal = torch.randn(dim, generator=g)
    score = x @ (normal / normal.norm()) + 0.3 * torch.randn(samples, generator=g)
    if extremes:
        per_end = math.ceil(0.02 * samples)
        order = score.argsort()
        x = torch.cat([x[order[-per_end:]], x[order[:per_end]]])
        y = torch.cat([torch.ones(per_end), torch.zeros(per_end)])
    else:
        y = (score > 0).float()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))
    train, test = perm[:round(0.7 * len(x))], perm[round(0.7 * len(x)):]
    return x[train], y[train], x[test], y[test]


def svm_project(samples: int, dim: int, extremes: bool) -> tuple[float, float, int]:
    """(fit seconds, test accuracy %, training size) of ``linear_svm``."""
    x, y, x_test, y_test = svm_split(samples, dim, extremes)
    start = time.perf_counter()
    w, b = linear_svm(x, y, c=1.0)
    seconds = time.perf_counter() - start
    accuracy = ((x_test.double() @ w + b > 0).float() == y_test).float().mean()
    return seconds, 100 * float(accuracy), len(x)


def svm_sklearn(samples: int, dim: int, extremes: bool) -> tuple[float, float, int]:
    """(fit seconds, test accuracy %, training size) of ``SVC(kernel="linear", C=1)``."""
    x, y, x_test, y_test = (t.double().numpy() for t in svm_split(samples, dim, extremes))
    start = time.perf_counter()
    svc = SVC(kernel="linear", C=1.0).fit(x, y)
    seconds = time.perf_counter() - start
    return seconds, 100 * svc.score(x_test, y_test), len(x)


def bench_svm(args: argparse.Namespace) -> None:
    print(f"## InterFaceGAN: linear SVM, d = {args.svm_dim}, C = 1, 70/30 split\n")
    print("| set | train | project fit s | SVC fit s | speed-up | project test acc % "
          "| SVC test acc % | acc diff (points) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    results = []
    for extremes in (False, True):
        name = (f"2% top + 2% bottom of {args.svm_samples:,}" if extremes
                else f"all {args.svm_samples:,}, label noise")
        job = (args.svm_samples, args.svm_dim, extremes)
        ours = in_subprocess(svm_project, job, args.threads, f"svm {name}: project")
        ref = in_subprocess(svm_sklearn, job, args.threads, f"svm {name}: SVC")
        speedup, diff = ref[0] / ours[0], round(ours[1] - ref[1], 1) + 0.0  # no -0.0
        results.append((speedup, abs(diff)))
        print(f"| {name} | {ours[2]:,} | {ours[0]:.2f} | {ref[0]:.2f} | {ratio_text(speedup)} "
              f"{verdict(speedup >= 10)} | {ours[1]:.1f} | {ref[1]:.1f} | {diff:+.1f} "
              f"{verdict(abs(diff) <= 1)} |")
    speedup, diff = min(r[0] for r in results), max(r[1] for r in results)
    print(f"\ntarget: >= 10x faster: {verdict(speedup >= 10)} (min {ratio_text(speedup)}); "
          f"accuracy within 1 point: {verdict(diff <= 1)} (max {diff:.1f})\n")


# ---- SeFa ------------------------------------------------------------------------------------
def stylegan2_style_inputs(resolution: int = 1024) -> list[int]:
    """Input channels of the styled convolutions of config-f at ``resolution`` px: one at 4 px,
    then two per resolution (the up-sampling one reads the previous width)."""
    ch = default_channels(resolution)
    return [ch[0]] + [c for prev, cur in zip(ch, ch[1:]) for c in (prev, cur)]


def median_seconds(fn, repeats: int = 5):
    """(median seconds over ``repeats`` runs after one untimed, the last result)."""
    result, times = fn(), []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def sefa_reference(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference: unit rows, ``np.linalg.eig`` of A^T A in float32, unsorted
    (eigenvalues, eigenvectors as rows)."""
    w = weight.T.astype(np.float32)                       # d x rows
    w = w / np.linalg.norm(w, axis=0, keepdims=True)
    values, vectors = np.linalg.eig(w @ w.T)
    return values.real, vectors.real.T


def bench_sefa(args: argparse.Namespace) -> None:
    inputs = stylegan2_style_inputs(1024)
    weight = torch.randn(sum(inputs), DIM, generator=torch.Generator().manual_seed(SEFA_SEED))
    print(f"## SeFa: StyleGAN2-1024 config-f style affines, {len(inputs)} styled convs, "
          f"{sum(inputs):,} x {DIM} (inputs {'+'.join(map(str, inputs))})\n")
    print("| call | median s (5 runs) | < 1 s |")
    print("|---|---:|---|")
    worst = 0.0
    for k in (None, 10):
        seconds, (ours, _) = median_seconds(lambda: sefa_directions(weight, k))
        worst = max(worst, seconds)
        print(f"| sefa_directions(weight, {k}) | {seconds:.3f} | {verdict(seconds < 1)} |")
    seconds, (values, vectors) = median_seconds(lambda: sefa_reference(weight.numpy()))
    print(f"| reference: unit rows, np.linalg.eig(A^T A), float32, unsorted | {seconds:.3f} | - |")
    cos = abs(float(vectors[0] @ ours[0].double().numpy()) / np.linalg.norm(vectors[0]))
    rank = int((values > values[0]).sum()) + 1
    top = "yes" if rank == 1 and cos > 0.99 else "no"
    print(f"\neig's first returned vector: eigenvalue rank {rank} of {DIM}, |cos| with our top "
          f"direction {cos:.4f} (the top eigenvector: {top})")
    print(f"target: under 1 s: {verdict(worst < 1)} (max {worst:.3f} s)\n")


# ---- main ------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, nargs="+", default=None,
                        help="GANSpace sample counts (default 100000 1000000; --quick: "
                             "20000 100000)")
    parser.add_argument("--batch", type=int, default=10_000, help="GANSpace batch size")
    parser.add_argument("--components", type=int, default=80,
                        help="K of both PCAs (the GANSpace reference's default, 80)")
    parser.add_argument("--svm-samples", type=int, default=None,
                        help="InterFaceGAN samples (default 20000; --quick 5000)")
    parser.add_argument("--svm-dim", type=int, default=512)
    parser.add_argument("--quick", action="store_true", help="smaller GANSpace and SVM sizes")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    parser.add_argument("--only", nargs="+", choices=["ganspace", "svm", "sefa"],
                        default=["ganspace", "svm", "sefa"])
    args = parser.parse_args(argv)
    if args.samples is None:
        args.samples = [20_000, 100_000] if args.quick else [100_000, 1_000_000]
    if args.svm_samples is None:
        args.svm_samples = 5_000 if args.quick else 20_000
    if min(args.samples) < args.components:
        parser.error("every --samples must be at least --components")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    sys.stdout.reconfigure(line_buffering=True)  # tables appear as they are measured
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; numpy {np.__version__}, "
          f"scikit-learn {sklearn.__version__}; CPU\n")
    with threadpool_limits(args.threads):
        for name, bench in (("ganspace", bench_ganspace), ("svm", bench_svm), ("sefa", bench_sefa)):
            if name in args.only:
                bench(args)


if __name__ == "__main__":
    main()
